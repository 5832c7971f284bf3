"""Sub-commands of the ``facerec`` CLI, one module per command group."""
