"""Run a function in a fresh ``spawn``-ed process and get its result back.

Benchmarks use this so each CPU case starts with a clean allocator and its own peak-memory
counters (``resource.getrusage`` maxima never go down inside one process).
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import signal
from typing import Any, Callable

from digan.errors import DiganError

__all__ = ["run_in_fresh_process"]


def _child(q, fn: Callable[..., Any], args: tuple) -> None:  # pragma: no cover - runs in the child
    try:
        q.put(("ok", fn(*args)))
    except BaseException as e:  # report instead of leaving the parent waiting
        q.put(("error", f"{type(e).__name__}: {e}"))


def run_in_fresh_process(fn: Callable[..., Any], args: tuple, what: str) -> Any:
    """``fn(*args)`` in a new process (``fn`` must be a module-level function; args picklable).

    A failure in the child becomes a :class:`DiganError` naming ``what`` and the child's error;
    so does a child that ends without reporting (killed, out of memory, ``os._exit``, a result
    that cannot be pickled) instead of leaving the parent waiting forever.
    """
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q, fn, args))
    p.start()
    while True:
        try:
            status, payload = q.get(timeout=0.5)
            break
        except queue.Empty:
            if p.is_alive():
                continue
            try:  # it may have reported just before it ended
                status, payload = q.get(timeout=1.0)
                break
            except queue.Empty:
                p.join()
                raise DiganError(f"{what} failed: its worker process ended without a result ({_exit_reason(p.exitcode)}); "
                                 "rerun it, with a smaller case if it ran out of memory") from None
    p.join()
    if status != "ok":
        raise DiganError(f"{what} failed: {payload}")
    return payload


def _exit_reason(code: int | None) -> str:
    """'exit code N', or the signal that killed the process (SIGKILL: often out of memory)."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}" + (", often the system running out of memory" if name == "SIGKILL" else "")
    return f"exit code {code}"
