"""Speed and memory benchmark of the renderer (``digan-bench bench renderer``).

For each (batch, size) case and device it renders a random DIGAN-like batch (smooth depth in
[0.9, 1.1], random albedo, views up to +-60 degrees / +-0.1 translation, random light and a
transformation map) and times forward and forward+backward (loss on image and depth, gradients
to depth, albedo, view and light), reporting the median over ``repeats`` after one warm-up.

CPU figures depend strongly on other load: torch's intra-op threads wait for each other when
the cores are shared, so compare figures taken with the same ``--threads`` on an idle machine.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above the inputs; on CPU each case runs
in a fresh process and reports the growth of its peak resident set size (``ru_maxrss``) over the
resident size just before the first render, i.e. the extra memory forward+backward needs.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

from digan.errors import DiganError
from digan.utils.isolate import run_in_fresh_process

__all__ = ["BenchConfig", "BenchResult", "parse_cases", "run_renderer_bench"]


@dataclass
class BenchConfig:
    """What to benchmark."""

    cases: list[tuple[int, int]] = field(default_factory=lambda: [(8, 64), (16, 256)])  # (batch, size)
    repeats: int = 5
    devices: list[str] = field(default_factory=lambda: ["cpu", "cuda"])  # cuda skipped when absent
    backend: str = "torch"
    seed: int = 0
    threads: int = 0  # torch CPU threads (0 = torch's default)


@dataclass
class BenchResult:
    device: str
    backend: str
    batch: int
    size: int
    faces_per_mesh: int
    forward_ms: float
    forward_backward_ms: float
    peak_mem_mb: float
    images_per_s: float
    threads: int
    device_name: str
    load_avg_1m: float  # the machine's 1-minute load average when the case finished


def parse_cases(text: str) -> list[tuple[int, int]]:
    """'8x64,16x256' -> [(8, 64), (16, 256)] with a one-line error."""
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        try:
            b, s = part.split("x")
            out.append((int(b), int(s)))
        except ValueError as e:
            raise DiganError(f"bad case {part!r}: write BATCHxSIZE pairs, e.g. 8x64,16x256") from e
    if not out or any(b < 1 or s < 4 for b, s in out):
        raise DiganError(f"bad cases {text!r}: need batch >= 1 and size >= 4, e.g. 8x64,16x256")
    return out


def _inputs(batch: int, size: int, device: str, seed: int):
    from digan.render.types import Light, View

    g = torch.Generator().manual_seed(seed)
    lin = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    bump = torch.exp(-(xx**2 + 1.4 * yy**2) / 0.3)
    noise = torch.nn.functional.interpolate(torch.rand(batch, 1, 8, 8, generator=g), size=size, mode="bicubic", align_corners=True)
    depth = (1.08 - 0.12 * bump - 0.03 * noise).clamp(0.9, 1.1)
    albedo = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    rot = (torch.rand(batch, 3, generator=g) * 2 - 1) * 60.0
    trans = (torch.rand(batch, 3, generator=g) * 2 - 1) * 0.1
    trans[:, 2] *= 0.1
    amb = torch.rand(batch, generator=g) * 0.5 + 0.25
    dif = torch.rand(batch, generator=g) * 0.5 + 0.25
    ldir = torch.rand(batch, 2, generator=g) * 2 - 1
    tmap = torch.nn.functional.avg_pool2d((bump > 0.05).float().expand(batch, 1, size, size), 5, 1, 2)
    t = [x.to(device) for x in (depth, albedo, rot, trans, amb, dif, ldir, tmap)]
    for x in t[:7]:
        x.requires_grad_(True)
    return t, View, Light


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # pragma: no cover - non-Linux
        return 0.0


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _run_case(batch: int, size: int, device: str, backend: str, repeats: int, seed: int, threads: int = 0) -> dict:
    from digan.render.renderer import MeshRenderer, RendererConfig

    if threads > 0:
        torch.set_num_threads(threads)

    r = MeshRenderer(RendererConfig(image_size=size, backend=backend))  # type: ignore[arg-type]
    (depth, albedo, rot, trans, amb, dif, ldir, tmap), View, Light = _inputs(batch, size, device, seed)
    view, light = View(rot, trans), Light(amb, dif, ldir)

    def step(backward: bool) -> float:
        for x in (depth, albedo, rot, trans, amb, dif, ldir):
            x.grad = None
        _sync(device)
        t0 = time.perf_counter()
        if backward:
            out = r.render(depth, albedo, view, light, transform_map=tmap)
            (out.image.square().mean() + out.depth.mean()).backward()
        else:
            with torch.no_grad():
                r.render(depth, albedo, view, light, transform_map=tmap)
        _sync(device)
        return time.perf_counter() - t0

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_mb()
    step(True)  # warm-up (also sets the memory peak)
    if device.startswith("cuda"):
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        name = torch.cuda.get_device_name()
    else:
        peak = _peak_rss_mb() - base
        name = "cpu"
    fwd = statistics.median(step(False) for _ in range(repeats))
    both = statistics.median(step(True) for _ in range(repeats))
    return asdict(
        BenchResult(
            device=device,
            backend=backend,
            batch=batch,
            size=size,
            faces_per_mesh=2 * (size - 1) ** 2,
            forward_ms=fwd * 1e3,
            forward_backward_ms=both * 1e3,
            peak_mem_mb=max(peak, 0.0),
            images_per_s=batch / both,
            threads=torch.get_num_threads(),
            device_name=name,
            load_avg_1m=os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"),
        )
    )


def _run_isolated(args: tuple) -> dict:
    return run_in_fresh_process(_run_case, args, f"renderer benchmark case {args[:3]}")


def run_renderer_bench(cfg: BenchConfig, on_result=None) -> list[dict]:
    """Run every case on every available device; returns one dict per (device, case).

    CPU cases run in fresh processes so that each peak-memory figure is its own.
    """
    results = []
    for device in cfg.devices:
        if device.startswith("cuda") and not torch.cuda.is_available():
            continue
        if device not in ("cpu",) and not device.startswith("cuda"):
            raise DiganError(f"unknown device {device!r}; use cpu or cuda")
        for batch, size in cfg.cases:
            args = (batch, size, device, cfg.backend, cfg.repeats, cfg.seed, cfg.threads)
            res = _run_isolated(args) if device == "cpu" else _run_case(*args)
            results.append(res)
            if on_result is not None:
                on_result(res)
    return results
