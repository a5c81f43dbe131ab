"""``digan-bench bench identity``: wall time of the identity metric (1,000 faces x 7 poses by
default) on the CPU and, when onnxruntime has the CUDA provider, on the GPU.

What is timed: :meth:`evaluate.metrics.identity.IdentityAcrossPoses.compute` end to end on a
method that serves pre-made images (so the generator's own cost is excluded): detection of the
largest face in every image, 5-point alignment, ArcFace embedding, cosine similarities, and the
records. Model loading is done (and reported) before the clock starts, as the engine keeps the
sessions for all methods of a run. The images are real face photos from ``images`` (default: the
FFHQ and CelebA photos of the test data), resized to ``size``, cycled to ``n_faces`` faces;
rotated views are the photo mirrored for positive yaws and unchanged for negative ones, so the
detector finds faces at the realistic rate and cost.

Per-stage figures (detector, recognizer per image) come from a separate timed pass over one
batch of images. With ``n_faces`` below 1,000 the result is also extrapolated linearly to
1,000 faces and marked as such.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from digan.errors import DiganError

__all__ = ["IdentityBenchConfig", "run_identity_bench", "default_bench_images"]


@dataclass
class IdentityBenchConfig:
    """Settings of ``bench identity``. ``devices``: "cpu" and/or "cuda" (skipped without the
    onnxruntime CUDA provider). ``threads``: onnxruntime/torch CPU threads (default: torch's)."""

    n_faces: int = 1000
    yaws: tuple[float, ...] = (-45.0, -30.0, -15.0, 15.0, 30.0, 45.0)
    size: int = 64
    batch_size: int = 32
    detector: str | None = None
    recognizer: str | None = None
    images: str | None = None
    devices: list[str] = field(default_factory=lambda: ["cpu", "cuda"])
    threads: int | None = None


def default_bench_images() -> Path | None:
    """The test data's face photos when present (``$DIGAN_BENCH_TEST_DATA`` or ../shared/data)."""
    import os

    env = os.environ.get("DIGAN_BENCH_TEST_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    p = root / "faces"
    return p if p.is_dir() else None


def _load_photos(folder: Path, size: int, limit: int = 256) -> torch.Tensor:
    import cv2

    from digan.data.faces_folder import list_images, read_image
    from digan.utils.images import from_uint8

    files = [f for f in list_images(folder) if "cat" not in f.name][:limit]
    out = []
    for f in files:
        im = read_image(f)
        if im is None:
            continue
        h, w = im.shape[:2]
        s = min(h, w)
        im = im[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        out.append(cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA))
    if not out:
        raise DiganError(f"no readable images in {folder}; pass --images DIR with face photos")
    return from_uint8(np.stack(out))


def _bank_method(photos: torch.Tensor, size: int):
    from evaluate.methods import Capabilities, Method, Rendered

    class _Bank(Method):
        name = "bench-photos"

        @property
        def capabilities(self):
            return Capabilities(pose=True, image_size=size)

        def latents(self, n, seed, start=0):
            return torch.arange(start, start + n)

        def render(self, latents, yaw=0.0, pitch=0.0, light=None):
            x = photos[latents.long() % len(photos)]
            return Rendered(image=torch.flip(x, dims=[3]) if yaw > 0 else x)

    return _Bank()


def run_identity_bench(cfg: IdentityBenchConfig, on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Time the identity metric per device; returns one dict of figures per device."""
    import onnxruntime as ort

    from evaluate.metrics.base import EvalContext
    from evaluate.metrics.identity import IdentityAcrossPoses, make_pipeline

    if cfg.n_faces < 1:
        raise DiganError("--n-faces must be at least 1")
    folder = Path(cfg.images) if cfg.images else default_bench_images()
    if folder is None or not folder.is_dir():
        raise DiganError("no face photos to benchmark with; pass --images DIR (any folder of face photos)")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    photos = _load_photos(folder, cfg.size)
    method = _bank_method(photos, cfg.size)
    views = 1 + len(cfg.yaws)
    results = []
    for device in cfg.devices:
        if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            continue
        ctx = EvalContext(
            out_dir=Path("."), n_faces=cfg.n_faces, seed=0, batch_size=cfg.batch_size, device=device,
            yaws=tuple(cfg.yaws), pitches=(0.0,),
            models={k: v for k, v in (("detector", cfg.detector), ("recognizer", cfg.recognizer)) if v},
        )
        t0 = time.perf_counter()
        pipe = make_pipeline(ctx)  # loads (and caches) the sessions
        load_s = time.perf_counter() - t0
        # per-stage figures on one batch
        sample = photos[: min(len(photos), cfg.batch_size)]
        pipe.detector.detect_best(sample)  # warm-up
        t = time.perf_counter()
        faces = pipe.detector.detect_best(sample)
        det_ms = (time.perf_counter() - t) / len(sample) * 1e3
        from digan.faces.align import align_faces
        from digan.faces.detector import images_to_uint8

        ims = images_to_uint8(sample)
        ok = [i for i, f in enumerate(faces) if f is not None]
        t = time.perf_counter()
        crops = align_faces([ims[i] for i in ok], [faces[i].kps for i in ok])
        align_ms = (time.perf_counter() - t) / max(1, len(ok)) * 1e3
        pipe.recognizer.embed(crops)
        t = time.perf_counter()
        pipe.recognizer.embed(crops)
        rec_ms = (time.perf_counter() - t) / max(1, len(ok)) * 1e3
        # the metric end to end
        t = time.perf_counter()
        recs = IdentityAcrossPoses().compute(method, ctx)
        wall = time.perf_counter() - t
        overall = recs[-1]
        images = cfg.n_faces * views
        r = {
            "device": device,
            "providers": pipe.detector.providers,
            "n_faces": cfg.n_faces,
            "views": views,
            "images": images,
            "image_size": cfg.size,
            "batch_size": cfg.batch_size,
            "threads": cfg.threads or torch.get_num_threads(),
            "wall_s": wall,
            "images_per_s": images / wall,
            "faces_per_s": cfg.n_faces / wall,
            "wall_s_1000_faces": wall * 1000.0 / cfg.n_faces,
            "extrapolated": cfg.n_faces != 1000,
            "load_s": load_s,
            "detector_ms_per_image": det_ms,
            "align_ms_per_face": align_ms,
            "recognizer_ms_per_face": rec_ms,
            "detector": pipe.detector.path.name,
            "recognizer": pipe.recognizer.path.name,
            "identity_overall": overall.value,
            "missed": overall.stats.get("missed"),
        }
        results.append(r)
        if on_result is not None:
            on_result(r)
    return results
