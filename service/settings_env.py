"""Settings from the environment for a process that starts: each bad ``FACEREC_*`` value is one line, never a
traceback."""

from __future__ import annotations

import sys

from pydantic import ValidationError

from service.config import Settings


def settings_problems(exc: ValidationError) -> list[str]:
    """One line per problem of a :class:`Settings` validation: ``FACEREC_<NAME>: <why>``, or the why alone for a
    rule between settings (its message names them)."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        name = f"FACEREC_{where.upper()}: " if where else ""
        lines.append(f"{name}{str(err['msg']).removeprefix('Value error, ')}")
    return lines


def env_settings() -> Settings:
    """:class:`Settings` from the environment. A bad value prints ``error: <problem>`` lines on stderr and exits
    2, no traceback (``uvicorn --factory service.app:create_app``; ``facerec`` commands do the same)."""
    try:
        return Settings()
    except ValidationError as exc:
        for line in settings_problems(exc):
            print(f"error: {line}", file=sys.stderr)
        raise SystemExit(2) from None
