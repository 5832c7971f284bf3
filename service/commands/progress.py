"""The command line's progress bar: the task's description, a bar, done/total and the time left."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def progress_bar(
    console: Console | None = None, *, width: int = 0, disable: bool = False, transient: bool = False
) -> Progress:
    """A progress display on ``console`` (rich's default one if None); descriptions padded to ``width``."""
    label = f"{{task.description:<{width}}}" if width else "{task.description}"
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=disable,
        transient=transient,
    )
