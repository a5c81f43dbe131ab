"""``digan-bench bench student``: training-step time and peak memory, and inference throughput.

Per case (``preset`` x ``size`` x ``device``):

* ``ms_per_step``: median wall time of a full training step (teacher sampling, G3D forward, all
  losses of the config, backward, Adam step) over ``repeats`` steps after ``warmup`` steps;
* ``peak_mem_mb``: on CUDA ``max_memory_allocated`` during the steps; on CPU the growth of the
  process's peak resident set size (``ru_maxrss``) over its size before the model was built; CPU
  cases run in a fresh process so that each figure is its own;
* ``faces_per_s``: faces estimated and rendered per second at inference (no gradients, predicted
  view and light, batch ``batch``).

The teacher is ``--teacher PATH``, else the bundled tiny teacher when present, else a randomly
initialised StyleGAN2 of the requested size (width 64, style 128); the result names it.
"""

from __future__ import annotations

import resource
import statistics
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

__all__ = ["StudentBenchConfig", "run_student_bench"]


@dataclass
class StudentBenchConfig:
    presets: list[str] = field(default_factory=lambda: ["tiny", "paper"])
    sizes: list[int] = field(default_factory=lambda: [64])
    devices: list[str] = field(default_factory=lambda: ["cpu"])
    batch: int = 8
    warmup: int = 2
    repeats: int = 5
    teacher: Optional[str] = None
    overrides: list[str] = field(default_factory=list)
    threads: Optional[int] = None  # CPU threads per case (None: torch's default)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) / 1024.0
    return 0.0


def _teacher(path: Optional[str], size: int, device: str) -> tuple[Any, str]:
    from digan.student.testing import random_teacher

    if path:
        from digan.teacher.api import load_teacher

        return load_teacher(path, device), str(path)
    try:
        from digan.teacher.api import bundled_teacher_path, load_teacher

        p = bundled_teacher_path()
        if p.is_file():
            t = load_teacher(p, device)
            if t.size == size:
                return t, f"bundled {p.name}"
    except ImportError:  # pragma: no cover
        pass
    return random_teacher(size=size, style_dim=128, width=64, n_mlp=4).to(device), f"random StyleGAN2 {size}px (width 64, style 128)"


def _run_case(preset: str, size: int, device: str, batch: int, warmup: int, repeats: int, teacher_path: Optional[str], overrides: list[str],
              threads: Optional[int] = None) -> dict:
    from digan.student.config import make_config
    from digan.student.model import make_renderer
    from digan.student.objective import sample_teacher
    from digan.student.registry import get_builder

    warnings.simplefilter("ignore")
    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(0)
    cuda = device.startswith("cuda")
    base = torch.cuda.memory_allocated() if cuda else _rss_mb()
    teacher, tname = _teacher(teacher_path, size, device)
    cfg = make_config(preset, overrides=["train.w_stats_samples=1024", f"train.batch={batch}", *overrides])
    built = get_builder(cfg.model.name)(cfg, teacher, device)
    core, obj = built.core, built.objective
    opt = torch.optim.Adam(core.parameters(), lr=cfg.train.lr)
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    times = []
    for i in range(warmup + repeats):
        z = torch.randn(batch, int(teacher.style_dim), device=device)
        sync()
        t0 = time.perf_counter()
        loss, _ = obj(z)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1000)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - base
    core.eval()
    renderer = make_renderer(cfg, core.size)
    n_inf = 0
    with torch.no_grad():
        z = torch.randn(batch, int(teacher.style_dim), device=device)
        w, _ = sample_teacher(teacher, z, cfg.model.truncation)
        core.render(core.estimate(w, teacher), renderer, filter_grads=False)  # warm-up
        sync()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 2.0 or n_inf < 2 * batch:
            est = core.estimate(w, teacher)
            core.render(est, renderer, filter_grads=False)
            n_inf += batch
        sync()
        inf_s = time.perf_counter() - t0
    return {
        "preset": preset, "size": size, "device": device, "batch": batch,
        "device_name": torch.cuda.get_device_name(0) if cuda else "cpu",
        "ms_per_step": statistics.median(times), "ms_per_step_min": min(times),
        "peak_mem_mb": max(peak, 0.0), "faces_per_s": n_inf / inf_s,
        "params": sum(p.numel() for p in core.parameters()), "teacher": tname,
        "threads": torch.get_num_threads(), "perceptual": built.info.get("perceptual", {}).get("perceptual"),
    }


def _isolated(args: tuple) -> dict:
    from digan.utils.isolate import run_in_fresh_process

    return run_in_fresh_process(_run_case, args, f"student benchmark case {args[:3]}")


def run_student_bench(cfg: StudentBenchConfig, on_result: Callable[[dict], None] | None = None, isolate: bool = True) -> list[dict]:
    """Run every case; CUDA cases are skipped (with no result) when CUDA is absent."""
    out = []
    for device in cfg.devices:
        if device.startswith("cuda") and not torch.cuda.is_available():
            continue
        for size in cfg.sizes:
            for preset in cfg.presets:
                args = (preset, size, device, cfg.batch, cfg.warmup, cfg.repeats, cfg.teacher, list(cfg.overrides), cfg.threads)
                r = _isolated(args) if (isolate and device == "cpu") else _run_case(*args)
                out.append(r)
                if on_result:
                    on_result(r)
    return out
