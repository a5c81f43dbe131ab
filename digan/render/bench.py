"""Speed and memory benchmark of the renderer (``digan-bench bench renderer``).

For each (batch, size) case and device it renders a random DIGAN-like batch (smooth depth in
[0.9, 1.1], random albedo, views up to +-60 degrees / +-0.1 translation, random light and a
transformation map) and times forward and forward+backward (loss on image and depth, gradients
to depth, albedo, view and light), reporting the median over ``repeats`` after one warm-up.

CPU figures depend strongly on other load: torch's intra-op threads wait for each other when
the cores are shared, so compare figures taken with the same ``--threads`` on an idle machine.

Backend choice: every run that times both backends (``--backend both``) on a device records
their forward+backward times in a small cache (:func:`backend_cache_path`), and the renderer's
``backend="auto"`` picks the faster backend from it (:func:`measured_faster_backend`). With no
record for the device yet, ``auto`` makes a quick measurement once (batch 2 at
``min(size, 64)`` px, one warm-up and one timed fwd+bwd each) and records it too; a later
``bench renderer --backend both`` replaces it with the figures of the real sizes.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above the inputs; on CPU each case runs
in a fresh process and reports the growth of its peak resident set size (``ru_maxrss``) over the
resident size just before the first render, i.e. the extra memory forward+backward needs.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from digan.errors import DiganError
from digan.utils.isolate import run_in_fresh_process

__all__ = [
    "BenchConfig",
    "BenchResult",
    "parse_cases",
    "run_renderer_bench",
    "backend_cache_path",
    "record_backend_speeds",
    "measured_faster_backend",
]


@dataclass
class BenchConfig:
    """What to benchmark."""

    cases: list[tuple[int, int]] = field(default_factory=lambda: [(8, 64), (16, 256)])  # (batch, size)
    repeats: int = 5
    devices: list[str] = field(default_factory=lambda: ["cpu", "cuda"])  # cuda skipped when absent
    backend: str = "torch"  # torch, pytorch3d, auto, or both (torch and pytorch3d side by side)
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
    """Run every case on every available device; returns one dict per (device, case, backend).

    CPU cases run in fresh processes so that each peak-memory figure is its own. With
    ``backend="both"`` each case runs with the torch and the PyTorch3D backend (the latter only
    where it imports), the PyTorch3D result carries ``speed_ratio`` (its fwd+bwd time over the
    torch backend's), and the pair is recorded for ``backend="auto"``.
    """
    from digan.render.pytorch3d_backend import pytorch3d_available

    if cfg.backend == "both":
        backends = ["torch"] + (["pytorch3d"] if pytorch3d_available() else [])
    else:
        backends = [cfg.backend]
    results = []
    for device in cfg.devices:
        if device.startswith("cuda") and not torch.cuda.is_available():
            continue
        if device not in ("cpu",) and not device.startswith("cuda"):
            raise DiganError(f"unknown device {device!r}; use cpu or cuda")
        for batch, size in cfg.cases:
            pair = {}
            for backend in backends:
                args = (batch, size, device, backend, cfg.repeats, cfg.seed, cfg.threads)
                res = _run_isolated(args) if device == "cpu" else _run_case(*args)
                pair[backend] = res
                if backend == "pytorch3d" and "torch" in pair:
                    res["speed_ratio"] = res["forward_backward_ms"] / pair["torch"]["forward_backward_ms"]
                results.append(res)
                if on_result is not None:
                    on_result(res)
            if len(pair) == 2:
                record_backend_speeds(pair["torch"], pair["pytorch3d"], source="bench renderer")
    return results


# ------------------------------------------------------------------ backend choice for "auto"
def backend_cache_path() -> Path:
    """``$DIGAN_BENCH_CACHE_DIR/renderer_backends.json`` (default ``~/.cache/digan-bench``)."""
    root = os.environ.get("DIGAN_BENCH_CACHE_DIR") or str(Path("~/.cache/digan-bench").expanduser())
    return Path(root) / "renderer_backends.json"


def _device_key(device: torch.device, threads: int | None = None) -> str:
    """Device name (with the thread count on CPU) and library versions: a measurement holds
    only for this combination."""
    try:
        import pytorch3d

        p3d = getattr(pytorch3d, "__version__", "?")
    except Exception:
        p3d = "none"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu x{threads if threads else torch.get_num_threads()}"
    return f"{device.type}|{name}|torch {torch.__version__}|pytorch3d {p3d}"


def _load_cache() -> dict:
    try:
        return json.loads(backend_cache_path().read_text())
    except (OSError, ValueError):
        return {}


def record_backend_speeds(torch_res: dict, p3d_res: dict, source: str) -> None:
    """Store one side-by-side fwd+bwd measurement (two ``_run_case`` dicts) for ``auto``."""
    key = _device_key(torch.device(torch_res["device"]), torch_res.get("threads"))
    cache = _load_cache()
    entries = [e for e in cache.get(key, []) if e.get("size") != torch_res["size"]]
    entries.append({
        "size": torch_res["size"],
        "batch": torch_res["batch"],
        "torch_ms": torch_res["forward_backward_ms"],
        "pytorch3d_ms": p3d_res["forward_backward_ms"],
        "source": source,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    cache[key] = sorted(entries, key=lambda e: e["size"])
    _SESSION[key] = cache[key]
    path = backend_cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        os.replace(tmp, path)
    except OSError:  # a read-only home: the choice still holds for this process
        pass
    _MEMO.clear()


_MEMO: dict[tuple[str, int, int], str] = {}
_SESSION: dict[str, list] = {}  # this process's records, in case the cache file cannot be written


def _quick_measure(device: torch.device, size: int) -> None:
    """One small side-by-side fwd+bwd measurement (see the module docstring), recorded."""
    dev = str(device) if device.type == "cuda" else "cpu"
    s = min(int(size), 64)
    with torch.enable_grad():
        pair = [_run_case(2, s, dev, b, 1, 0, 0) for b in ("torch", "pytorch3d")]
    record_backend_speeds(pair[0], pair[1], source="quick measurement by backend=auto")


def measured_faster_backend(device: torch.device, size: int, measure: bool = True) -> str:
    """'torch' or 'pytorch3d', whichever has the smaller recorded fwd+bwd time on this device.

    Uses the record at the nearest image size (log scale). Without a record it measures once
    (when ``measure``) or answers 'torch'. Memoized per process.
    """
    memo = (str(device), int(size), torch.get_num_threads())
    if memo in _MEMO:
        return _MEMO[memo]
    key = _device_key(device)
    entries = _load_cache().get(key) or _SESSION.get(key, [])
    if not entries and measure:
        _quick_measure(device, size)
        entries = _load_cache().get(key) or _SESSION.get(key, [])
    if not entries:
        return "torch"
    e = min(entries, key=lambda e: abs(math.log(e["size"] / max(size, 1))))
    choice = "pytorch3d" if e["pytorch3d_ms"] < e["torch_ms"] else "torch"
    _MEMO[memo] = choice
    return choice

