"""Rich progress bars and console used by every long job.

``progress()`` gives a :class:`rich.progress.Progress` with a spinner, bar, counts, rate and ETA
when stderr is a terminal. Without a terminal (``nohup``, CI logs, ``2> file``) a bar cannot
redraw, so long jobs print one plain progress line per task at intervals instead
(``run digan identity: 120/320 (38%), 0:01:10 elapsed, ~0:01:57 left, ...``), plus a last line
when a task finishes: ``DIGAN_BENCH_PROGRESS_INTERVAL`` sets the interval in seconds (default
30; ``0`` prints nothing), ``DIGAN_BENCH_FORCE_PROGRESS=1`` forces the live bar. Set
``DIGAN_BENCH_QUIET=1`` (the tests do) to silence both while keeping errors visible.
"""

from __future__ import annotations

import os
import sys
import time

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

__all__ = ["console", "err_console", "progress", "quiet", "LineProgress"]

console = Console()
err_console = Console(stderr=True)


def quiet() -> bool:
    return os.environ.get("DIGAN_BENCH_QUIET", "") not in ("", "0")


def _interval() -> float:
    try:
        return float(os.environ.get("DIGAN_BENCH_PROGRESS_INTERVAL", "30"))
    except ValueError:
        return 30.0


def _hms(seconds: float) -> str:
    s = int(round(max(0.0, seconds)))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class LineProgress:
    """The ``rich.progress.Progress`` calls the toolkit uses (``add_task``, ``update``,
    ``advance``, context manager) printing plain lines to stderr: one per task every
    ``interval`` seconds while it moves, and one when it completes. For logs without a terminal."""

    def __init__(self, interval: float, stream=None, clock=time.monotonic):
        self.interval = float(interval)
        self.stream = stream
        self.clock = clock
        self._tasks: dict[int, dict] = {}

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields) -> int:
        tid = len(self._tasks)
        now = self.clock()
        self._tasks[tid] = {"desc": description, "total": total, "done": float(completed), "from": float(completed),
                            "start": now, "last": now,
                            "info": fields.get("info", ""), "finished": False}
        return tid

    def advance(self, task: int, advance: float = 1) -> None:
        self.update(task, advance=advance)

    def update(self, task: int, *, completed: float | None = None, total: float | None = None, advance: float | None = None,
               description: str | None = None, **fields) -> None:
        t = self._tasks[task]
        if total is not None:
            t["total"] = total
        if completed is not None:
            t["done"] = float(completed)
        if advance:
            t["done"] += float(advance)
        if description is not None:
            t["desc"] = description
        if "info" in fields:
            t["info"] = fields["info"]
        now = self.clock()
        finished = t["total"] is not None and t["done"] >= t["total"]
        if finished and not t["finished"]:
            t["finished"] = True
            self._print(t, now)
        elif not finished and now - t["last"] >= self.interval:
            self._print(t, now)

    def line(self, t: dict, now: float) -> str:
        el = now - t["start"]
        parts = []
        if t["total"]:
            frac = min(1.0, t["done"] / t["total"])
            parts.append(f"{t['done']:g}/{t['total']:g} ({100 * frac:.0f}%)")
            parts.append(f"{_hms(el)} elapsed")
            # the rate counts only the work done in this process: a resumed run starts part-way
            moved = t["done"] - t["from"]
            if 0 < frac < 1 and moved > 0 and el > 0:
                parts.append(f"~{_hms((t['total'] - t['done']) * el / moved)} left")
        else:
            parts.append(f"{t['done']:g} done, {_hms(el)} elapsed")
        info = str(t["info"] or "")
        if info and "[" not in info:  # rich markup (e.g. "[red]error") is for the live bar only
            parts.append(info)
        return f"{t['desc']}: " + ", ".join(parts)

    def _print(self, t: dict, now: float) -> None:
        t["last"] = now
        if self.interval <= 0:
            return
        print(self.line(t, now), file=self.stream or sys.stderr, flush=True)


def progress(transient: bool = False) -> Progress | LineProgress:
    """A progress bar; extra ``fields`` passed to ``add_task``/``update`` show in ``{task.fields[info]}``.
    Without a terminal: a :class:`LineProgress` (module docstring)."""
    if not quiet() and not sys.stderr.isatty() and not os.environ.get("DIGAN_BENCH_FORCE_PROGRESS"):
        return LineProgress(_interval())
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
