"""Keep libraries that Keras imports only optionally out of the server process.

``import keras`` (which ``import tensorflow`` triggers) imports matplotlib for ``keras.visualization`` and
scikit-learn for ``keras.wrappers``, each inside ``try: ... except ImportError``. The server never plots and
never wraps an estimator, yet the two cost about 80 MiB of resident memory (measured: an analyzer after one
detection, 902 MiB with both, 820 MiB with both blocked). Blocking them makes Keras take its "not installed"
path. The CLI's evaluation and training commands (which plot and whose dependencies use scikit-learn) run in
their own processes and are not affected.
"""

from __future__ import annotations

import sys

OPTIONAL_IMPORTS = ("matplotlib", "sklearn")
"""Top-level packages the server does not use but Keras would import if present."""


def block_optional_imports(names: tuple[str, ...] = OPTIONAL_IMPORTS) -> list[str]:
    """Make ``import <name>`` (and of its submodules) raise ``ImportError`` in this process, for each name not
    already imported. Call before TensorFlow/Keras is imported. Returns the names blocked."""
    blocked = []
    for name in names:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]  # None in sys.modules: import raises ImportError
            blocked.append(name)
    return blocked
