"""The CLI's one error type: a failure reported in one line, exit status 1."""

from __future__ import annotations


class CliError(Exception):
    """A failure to report in one line and exit 1; ``status`` and ``code`` are the server's answer, if any."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "error") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
