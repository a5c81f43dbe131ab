"""Run a function in a fresh ``spawn``-ed process and get its result back.

Benchmarks use this so each CPU case starts with a clean allocator and its own peak-memory
counters (``resource.getrusage`` maxima never go down inside one process).
"""

from __future__ import annotations

import multiprocessing as mp
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

    A failure in the child becomes a :class:`DiganError` naming ``what`` and the child's error.
    """
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q, fn, args))
    p.start()
    status, payload = q.get()
    p.join()
    if status != "ok":
        raise DiganError(f"{what} failed: {payload}")
    return payload
