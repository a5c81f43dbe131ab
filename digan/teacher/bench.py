"""Speed and memory of teacher training (``digan-bench bench teacher``).

Each case builds a trainer for a preset architecture at a given size and batch, feeds random
images, and times (median over ``repeats`` after ``warmup`` iterations):

* ``step_ms``: one plain iteration (D step on real + fake, G step, EMA update);
* ``r1_ms``: one lazy R1 step; ``pl_ms``: one path-length step (when the preset uses it);
* ``amortized_ms`` = step + r1 / d_reg_every + pl / g_reg_every: the average cost per
  iteration of a real run; ``img_per_s`` = batch / amortized.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` (everything: weights, optimiser state,
activations); on CPU each case runs in a fresh process and reports its peak resident set size
(``ru_maxrss``) and the growth over the resident size after building the models and optimisers
(i.e. what training itself adds).
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field

import torch

from digan.errors import DiganError
from digan.utils.isolate import run_in_fresh_process

__all__ = ["TeacherBenchConfig", "parse_cases", "run_teacher_bench", "DEFAULT_CASES"]

# (preset, size, batch, device)
DEFAULT_CASES = "tiny@64x16:cpu,standard@64x16:cpu,standard@256x16:cuda"


@dataclass
class TeacherBenchConfig:
    cases: list[tuple[str, int, int, str]] = field(default_factory=lambda: parse_cases(DEFAULT_CASES))
    repeats: int = 3
    warmup: int = 1
    threads: int = 0  # 0: torch default
    seed: int = 0


def _is_size(x: int) -> bool:
    return 32 <= x <= 1024 and x & (x - 1) == 0


def parse_cases(text: str) -> list[tuple[str, int, int, str]]:
    """'tiny@16x64:cpu,standard@16x256:cuda' -> [(preset, size, batch, device), ...].

    Cases are written ``PRESET@BATCHxSIZE:DEVICE``, batch first as in ``bench renderer``. A pair
    whose first number only can be a teacher resolution (a power of two, 32-1024) and whose second
    cannot (``64x16``, the order this command used before) is read as ``SIZExBATCH``.
    """
    from digan.teacher.train import PRESETS

    out = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        try:
            head, dev = part.split(":") if ":" in part else (part, "cpu")
            preset, sb = head.split("@")
            a, b = (int(x) for x in sb.lower().split("x"))
        except ValueError as e:
            raise DiganError(f"bad case {part!r}: write PRESET@BATCHxSIZE:DEVICE, e.g. tiny@16x64:cpu") from e
        batch, size = (b, a) if (_is_size(a) and not _is_size(b)) else (a, b)
        if not _is_size(size) or batch < 1:
            raise DiganError(f"bad case {part!r}: write PRESET@BATCHxSIZE:DEVICE with SIZE a power of two from 32 to 1024, "
                             "e.g. tiny@16x64:cpu")
        if preset not in PRESETS:
            raise DiganError(f"bad case {part!r}: unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
        if dev not in ("cpu", "cuda"):
            raise DiganError(f"bad case {part!r}: device must be cpu or cuda")
        out.append((preset, size, batch, dev))
    if not out:
        raise DiganError("no benchmark cases given; e.g. --cases tiny@16x64:cpu")
    return out


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # pragma: no cover
        return 0.0


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _case(preset: str, size: int, batch: int, device: str, repeats: int, warmup: int, threads: int, seed: int) -> dict:
    from digan.teacher.train import TeacherTrainer, preset_config

    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    cfg = preset_config(preset)
    cfg.model.size = size
    if cfg.model.channels is not None:
        cfg.model.channels = {r: c for r, c in cfg.model.channels.items() if r <= size}
    cfg.batch = batch
    cfg.augment.p = 0.2  # augmentation costs what it costs in a real run
    tr = TeacherTrainer(cfg, device)
    real = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = _rss_mb()

    def timed(fn) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t) * 1000

    def plain() -> None:
        tr.d_step(real)
        tr.g_step(batch)
        tr.step += 1
        tr.update_ema()

    res: dict[str, float] = {}
    for name, fn, on in (("step_ms", plain, True), ("r1_ms", lambda: tr.r1_step(real), cfg.r1 > 0),
                         ("pl_ms", lambda: tr.pl_step(batch), cfg.path_regularize > 0)):
        if not on:
            res[name] = 0.0
            continue
        for _ in range(warmup):
            timed(fn)
        res[name] = statistics.median(timed(fn) for _ in range(repeats))
    amort = res["step_ms"] + res["r1_ms"] / cfg.d_reg_every + (res["pl_ms"] / cfg.g_reg_every if cfg.path_regularize > 0 else 0.0)
    n_g = sum(p.numel() for p in tr.g.parameters())
    n_d = sum(p.numel() for p in tr.d.parameters())
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        extra = peak
        name = torch.cuda.get_device_name()
    else:
        peak = _peak_rss_mb()
        extra = max(0.0, peak - base)
        import platform

        name = platform.processor() or platform.machine()
    return {
        "preset": preset, "size": size, "batch": batch, "device": device, "device_name": name,
        "g_params_m": n_g / 1e6, "d_params_m": n_d / 1e6, **res, "amortized_ms": amort,
        "img_per_s": batch / (amort / 1000), "peak_mem_mb": peak, "train_mem_mb": extra,
        "threads": torch.get_num_threads(), "path_regularize": cfg.path_regularize > 0,
    }


def run_teacher_bench(cfg: TeacherBenchConfig, on_result=None) -> list[dict]:
    """Run every case (CUDA cases skipped without a GPU; CPU cases in fresh processes)."""
    out = []
    for preset, size, batch, device in cfg.cases:
        if device == "cuda" and not torch.cuda.is_available():
            r = {"preset": preset, "size": size, "batch": batch, "device": device, "skipped": "no CUDA device"}
        elif device == "cpu":
            r = run_in_fresh_process(
                _case, (preset, size, batch, device, cfg.repeats, cfg.warmup, cfg.threads, cfg.seed),
                f"teacher benchmark case {preset}@{size}x{batch}:{device}",
            )
        else:
            r = _case(preset, size, batch, device, cfg.repeats, cfg.warmup, cfg.threads, cfg.seed)
        out.append(r)
        if on_result is not None:
            on_result(r)
    return out
