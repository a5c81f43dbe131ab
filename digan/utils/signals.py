"""SIGTERM handled as Ctrl-C by long runs.

``kill PID`` (SIGTERM) is how schedulers and shells stop a job (SLURM before preemption, a
container being stopped), and a background job started from a script ignores SIGINT, so Ctrl-C's
"write a checkpoint, then stop" path is often not reachable. Inside :func:`terminate_as_interrupt`
SIGTERM raises :class:`KeyboardInterrupt` in the main thread, so a training loop takes that same
path: its last state is saved, the CLI says "interrupted ... rerun the same command to resume"
and exits with 130.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

__all__ = ["terminate_as_interrupt"]


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")


@contextmanager
def terminate_as_interrupt() -> Iterator[bool]:
    """Within the block SIGTERM raises KeyboardInterrupt; the previous handler is restored on exit.

    Yields whether the handler was installed: not outside the main thread (Python delivers signals
    there only) nor where the platform has no SIGTERM; then the block runs unchanged."""
    term = getattr(signal, "SIGTERM", None)
    if term is None or threading.current_thread() is not threading.main_thread():
        yield False
        return
    try:
        previous = signal.signal(term, _raise_interrupt)
    except (ValueError, OSError):  # e.g. an embedded interpreter that does not allow it
        yield False
        return
    try:
        yield True
    finally:
        signal.signal(term, previous)
