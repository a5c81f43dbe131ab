"""Speed and peak memory of generation (and multi-view rendering) at a fixed batch size.

Protocol
--------
* Latents for ``(warmup + batches) x batch_size`` faces of ``ctx.seed`` are made first (not
  timed). ``warmup`` batches (default 2) are rendered and discarded (allocator, kernels, caches);
  then ``batches`` batches (default 8) of ``ctx.batch_size`` faces are timed with a monotonic
  clock, synchronising CUDA before each clock read, under ``torch.no_grad``. The timed part of
  each stage stops early, after at least one batch, once it has run ``max_seconds`` (default
  10 s; 0 = no limit), so the metric takes seconds, not minutes, on a slow CPU; the records'
  ``stats.n`` and ``per_batch_s`` say how many batches were timed.
* **generate**: ``method.render(latents, yaw=0, pitch=0)``: a face from its latent to the
  frontal image (for DIGAN: mapping, the 3D networks and the mesh renderer).
  Record ``speed`` / ``overall`` in faces/s (higher is better).
* **multiview** (methods with pose control only): every batch rendered at each of ``ctx.yaws``
  (or the option ``multiview_yaws``);
  record ``speed`` / ``stage=multiview`` in images/s.
* **Peak memory** (record ``memory``, MiB, lower is better; ``overall`` = generate):
  on CUDA ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (absolute:
  includes the weights already on the GPU); on CPU the growth of the process's peak resident set
  over the timed batches (freed heap memory is first returned to the OS with glibc
  ``malloc_trim``, then ``VmHWM`` from ``/proc/self/status`` is reset through
  ``/proc/self/clear_refs``; where that is not allowed, RSS sampled every 2 ms by a thread),
  i.e. the working memory of generating one batch, without the weights already loaded. The record's
  ``config.memory_method`` says which.
* Device, torch threads and batch size are part of the record's config (numbers are only
  comparable on the same machine). Under torchrun each rank times its own batches; the value is
  the sum of the ranks' throughputs (aggregate faces/s) and the max of their memory.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

from digan.utils import dist
from evaluate.methods import Method
from evaluate.metrics.base import EvalContext, Metric, register_metric
from evaluate.records import Record

__all__ = ["Speed", "PeakMemory", "time_batches"]

_MIB = 1024.0 * 1024.0


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_memory() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``) so that memory freed by
    earlier work in this process does not hide the growth we measure."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the growth may be under-estimated
        pass


class PeakMemory:
    """Context manager measuring peak memory (bytes) of the enclosed code on ``device``.

    ``peak`` after exit: CUDA max allocated (absolute), or CPU peak-RSS growth over the
    baseline at entry. ``method`` names the measurement used.
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.peak = 0.0
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._max = 0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "cuda.max_memory_allocated"
            return self
        _release_free_memory()
        self._base = (_rss_kib("VmRSS") or 0) * 1024
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
            hwm = _rss_kib("VmHWM")
            if hwm is None or hwm * 1024 > self._base + 64 * 1024 * 1024:
                raise OSError("VmHWM was not reset")
            self.method = "cpu.rss_hwm_growth"
        except OSError:
            self.method = "cpu.rss_sampled_growth"
            self._max = self._base
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            v = (_rss_kib("VmRSS") or 0) * 1024
            self._max = max(self._max, v)
            time.sleep(0.002)

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = float(torch.cuda.max_memory_allocated(self.device))
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            peak = self._max
        else:
            peak = (_rss_kib("VmHWM") or 0) * 1024
        self.peak = float(max(0, peak - self._base))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_batches(fn: Callable[[int], Any], n_batches: int, warmup: int, device: torch.device,
                 max_seconds: float | None = None) -> tuple[float, float, str, list[float]]:
    """Run ``fn(i)`` for ``warmup`` untimed then ``n_batches`` timed batches; the timed part stops
    early (after at least one batch) once it has run ``max_seconds``.

    Returns (total seconds, peak memory bytes, memory method, per-batch seconds): ``len(per)``
    is the number of batches actually timed.
    """
    for i in range(warmup):
        fn(i)
    _sync(device)
    per = []
    with PeakMemory(device) as mem:
        t0 = time.perf_counter()
        for i in range(warmup, warmup + n_batches):
            a = time.perf_counter()
            fn(i)
            _sync(device)
            per.append(time.perf_counter() - a)
            if max_seconds is not None and time.perf_counter() - t0 >= max_seconds:
                break
        total = time.perf_counter() - t0
    return total, mem.peak, mem.method, per


@register_metric
class Speed(Metric):
    """Generation speed (faces/s, frontal) and peak memory at a fixed batch size; also multi-view."""

    name = "speed"
    unit = "faces/s"
    higher_is_better = True
    requires = ("generate",)

    def __init__(self, warmup: int = 2, batches: int = 8, multiview: bool = True,
                 multiview_yaws: list[float] | None = None, max_seconds: float | None = 10.0):
        self.warmup = int(warmup)
        self.batches = int(batches)
        self.multiview = bool(multiview)
        self.multiview_yaws = [float(y) for y in multiview_yaws] if multiview_yaws else None
        self.max_seconds = float(max_seconds) if max_seconds else None

    def _yaws(self, ctx: EvalContext) -> list[float]:
        if not self.multiview:
            return []
        return list(self.multiview_yaws) if self.multiview_yaws is not None else [float(y) for y in ctx.yaws]

    def config(self, ctx: EvalContext) -> dict[str, Any]:
        return {
            "seed": ctx.seed, "batch_size": ctx.batch_size, "device": ctx.device,
            "threads": torch.get_num_threads(), "warmup_batches": self.warmup, "timed_batches": self.batches,
            "max_seconds": self.max_seconds, "multiview_yaws": self._yaws(ctx),
            "world_size": dist.world_size(), "cpu_count": os.cpu_count(),
        }

    def work_units(self, method: Method, ctx: EvalContext) -> int:
        views = 1 + (len(self._yaws(ctx)) if method.capabilities.pose else 0)
        return (self.warmup + self.batches) * views

    def compute(self, method: Method, ctx: EvalContext) -> list[Record]:
        device = torch.device(ctx.device)
        bs = int(ctx.batch_size)
        n_total = (self.warmup + self.batches) * bs
        cap = method.capabilities.max_faces
        if cap:
            bs = max(1, min(bs, int(cap) // max(1, self.warmup + self.batches)))
            n_total = (self.warmup + self.batches) * bs
        base = dist.rank() * n_total  # each rank times its own faces
        with torch.no_grad():
            lat = method.latents(n_total, ctx.seed, start=base)
        if isinstance(lat, torch.Tensor):
            lat = lat.to(device)

        def gen(i: int) -> None:
            with torch.no_grad():
                method.render(lat[i * bs:(i + 1) * bs], yaw=0.0, pitch=0.0)
            ctx.advance(1)

        secs, peak, mem_method, per = time_batches(gen, self.batches, self.warmup, device, self.max_seconds)
        nb = len(per)
        rate = nb * bs / secs
        cfg = {**self.config(ctx), "batch_size": bs, "memory_method": mem_method}
        rates = dist.all_gather_objects((rate, peak))
        total_rate = sum(r for r, _ in rates)
        peak_all = max(p for _, p in rates)
        recs = [
            Record(method=method.name, metric="speed", setting="overall", value=total_rate, unit="faces/s",
                   higher_is_better=True, n_faces=nb * bs * dist.world_size(),
                   stats={"n": nb * bs, "seconds": secs, "per_batch_s": per,
                          "per_rank_faces_per_s": [r for r, _ in rates]}, config=cfg),
            Record(method=method.name, metric="memory", setting="overall", value=peak_all / _MIB, unit="MiB",
                   higher_is_better=False, n_faces=nb * bs * dist.world_size(),
                   stats={"bytes": peak_all}, config=cfg),
        ]
        yaws = self._yaws(ctx)
        if method.capabilities.pose and yaws:

            def views(i: int) -> None:
                with torch.no_grad():
                    for y in yaws:
                        method.render(lat[i * bs:(i + 1) * bs], yaw=float(y), pitch=0.0)
                        ctx.advance(1)

            secs, peak, mem_method, per = time_batches(views, self.batches, self.warmup, device, self.max_seconds)
            nb = len(per)
            rate = nb * bs * len(yaws) / secs
            rates = dist.all_gather_objects((rate, peak))
            cfg_mv = {**cfg, "memory_method": mem_method}
            recs += [
                Record(method=method.name, metric="speed", setting="stage=multiview",
                       value=sum(r for r, _ in rates), unit="images/s", higher_is_better=True,
                       n_faces=nb * bs * dist.world_size(),
                       stats={"n": nb * bs * len(yaws), "seconds": secs, "views": len(yaws),
                              "per_batch_s": per}, config=cfg_mv),
                Record(method=method.name, metric="memory", setting="stage=multiview",
                       value=max(p for _, p in rates) / _MIB, unit="MiB", higher_is_better=False,
                       n_faces=nb * bs * dist.world_size(), stats={"bytes": max(p for _, p in rates)},
                       config=cfg_mv),
            ]
        return recs
