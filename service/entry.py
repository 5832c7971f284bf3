"""The ``facerec`` console script. The CLI (a second or so of imports) loads inside the Ctrl-C guard: Ctrl-C
while it loads exits 130 quietly, as Ctrl-C during a command does, instead of printing a traceback."""

from __future__ import annotations

import sys

INTERRUPTED = 130
"""128 + SIGINT: the status shells give a command stopped by Ctrl-C."""


def main() -> None:
    """Import and run the ``facerec`` CLI (:mod:`service.cli`); exit 130 on Ctrl-C, whenever it comes."""
    try:
        from service.cli import app

        app()
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)


if __name__ == "__main__":  # pragma: no cover
    main()
