"""The ``facerec`` command line: a thin layer over ``embeddings`` and the service.

Each command group lives in ``service/commands/<group>.py`` and is registered here.
"""

from __future__ import annotations

import os

import typer

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from service.commands import weights as weights_cmd

app = typer.Typer(help="facerec: self-hosted face recognition.", no_args_is_help=True, add_completion=False)
app.add_typer(weights_cmd.app, name="weights")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
