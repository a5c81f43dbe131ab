"""Rich progress bars and console used by every long job.

``progress()`` gives a :class:`rich.progress.Progress` with a spinner, bar, counts, rate and ETA.
Set ``DIGAN_BENCH_QUIET=1`` (the tests do) to silence bars while keeping errors visible.
"""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["console", "err_console", "progress", "quiet"]

console = Console()
err_console = Console(stderr=True)


def quiet() -> bool:
    return os.environ.get("DIGAN_BENCH_QUIET", "") not in ("", "0")


def progress(transient: bool = False) -> Progress:
    """A progress bar; extra ``fields`` passed to ``add_task``/``update`` show in ``{task.fields[info]}``."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=err_console,
        transient=transient,
        disable=quiet() or not (sys.stderr.isatty() or os.environ.get("DIGAN_BENCH_FORCE_PROGRESS")),
    )
