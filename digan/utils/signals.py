"""SIGTERM handled as Ctrl-C by long runs.

``kill PID`` (SIGTERM) is how schedulers and shells stop a job (SLURM before preemption, a
container being stopped), and a background job started from a script ignores SIGINT, so Ctrl-C's
"write a checkpoint, then stop" path is often not reachable. Inside :func:`terminate_as_interrupt`
SIGTERM raises :class:`KeyboardInterrupt` in the main thread, so a training loop takes that same
path: its last state is saved, the CLI says "interrupted ... rerun the same command to resume"
and exits with 130. :func:`interrupts_between_steps` holds Ctrl-C / SIGTERM until the current
training step is complete, so the checkpoint written on the way out is the state between two
steps and resuming from it continues exactly as an uninterrupted run would.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

__all__ = ["terminate_as_interrupt", "interrupts_between_steps"]


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


@contextmanager
def interrupts_between_steps() -> Iterator[None]:
    """Hold SIGINT (Ctrl-C) and SIGTERM that arrive inside the block and raise the interrupt
    (:class:`KeyboardInterrupt`) when the block ends; a second one inside the block raises at once
    (for a step that never ends). Wrap one training step in it: an interrupt can then land only
    between steps, never between a step's generator and discriminator updates. The previous
    handlers are restored on exit. Outside the main thread the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = [s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None]
    held: list[int] = []

    def hold(signum: int, frame: object) -> None:
        held.append(signum)
        if len(held) > 1:
            _raise_interrupt(signum, frame)

    previous = {}
    try:
        for s in sigs:
            previous[s] = signal.signal(s, hold)
    except (ValueError, OSError):  # not allowed here: run the block as it is
        for s, h in previous.items():
            signal.signal(s, h)
        yield
        return
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if held:
        _raise_interrupt(held[0], None)
