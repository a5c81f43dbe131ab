"""FID and KID through clean-fid, on images rendered by the method (frontal view).

Protocol (both metrics)
-----------------------
* **Generated set**: faces ``0 .. n-1`` of ``ctx.seed`` (``n = ctx.n_faces``, capped by a sample
  folder's size), latents from ``method.latents``, rendered by ``method.render`` at the frontal
  view (yaw 0, pitch 0) with the method's own light. No truncation unless the method's config
  says so (it is stored in the record's ``config.method``). Images are quantised to 8 bits
  exactly as if saved to PNG, then resized with clean-fid's **clean** resizer (PIL bicubic on
  float32 channels to 299 x 299, ``cleanfid.resize.build_resizer("clean")``), then fed to the
  feature extractor as ``B x 3 x 299 x 299`` floats in ``[0, 255]``.
* **Reference set**: every image file (clean-fid's extensions, recursive, sorted) under the
  data folder ``ctx.data[dataset]`` (option ``dataset``, default ``"ffhq"``; the demo uses
  ``synth``; for a synthetic data set its ``images/`` folder), optionally only the first
  ``max_reference``. Each image is centre-cropped to a
  square, resized to the method's image size with PIL Lanczos when its size differs (how FFHQ-256
  is made from FFHQ-1024), then goes through the same clean resize and extractor. Reference
  features are computed **once** and cached as ``.npz`` (``mu``, ``sigma``, ``feats``) under
  ``ctx.cache_dir/fid-ref/`` with the key ``sha256(file list + sizes, image size, extractor id,
  mode "clean", max_reference)`` (:func:`reference_cache_key`), so adding, removing or
  replacing a file (different size), or changing the resolution or the extractor, recomputes them.
* **Features**: ``extractor="inception"`` (default) is clean-fid's Inception-v3 TorchScript
  (``inception-2015-12-05.pt``, pool3, 2048-d) in "clean" mode. It is looked up at
  ``--model inception=PATH``, then clean-fid's own cache folder ``/tmp`` (Windows: ``./``), then
  ``ctx.cache_dir``; when absent a :class:`~digan.errors.MissingAssetError` names the file, the
  folder and the URL *before* any network attempt. ``extractor="randproj"`` is the demo-only
  offline fallback (a fixed seeded random projection of 16 x 16 average-pooled pixels,
  :func:`random_projection_extractor`); its records carry ``"[... features, not Inception]"`` in
  their ``dataset`` field and ``config.inception = false`` so they are never mistaken for FID.
  Custom extractors: :func:`register_feature_extractor` or pass ``feature_extractor=callable``.
* **FID** = ``cleanfid.fid.frechet_distance(mu_g, sigma_g, mu_r, sigma_r)`` with ``np.cov``
  (unbiased) covariances. FID is biased by the sample count: compare only numbers computed with
  the same ``n_faces`` (paper-comparable numbers: 50,000 samples against the full reference set;
  the default run uses 1,000). Lower is better.
* **KID** = ``cleanfid.fid.kernel_distance``: unbiased MMD^2 with the polynomial kernel
  ``k(x, y) = (x.y / d + 1)^3``, averaged over ``num_subsets`` (100) random subsets of size
  ``min(n_gen, n_ref, max_subset_size=1000)`` drawn without replacement. The subsets are drawn
  from numpy's global generator seeded with ``ctx.seed`` (state restored afterwards), so KID is
  reproducible; ``stats.std`` is the spread over subsets. Reported raw (papers often show x1e3).

Generated features are shared between ``fid`` and ``kid`` within a process (same method,
faces, extractor), so running both costs one rendering pass.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from digan.errors import DiganError, MissingAssetError
from digan.utils import dist
from digan.utils.images import to_uint8
from digan.utils.io import write_bytes
from evaluate.methods import Method
from evaluate.metrics.base import EvalContext, Metric, register_metric
from evaluate.records import Record

__all__ = [
    "FeatureExtractor",
    "register_feature_extractor",
    "feature_extractors",
    "inception_extractor",
    "random_projection_extractor",
    "find_inception",
    "INCEPTION_FILE",
    "INCEPTION_URL",
    "clean_resize",
    "prepare_reference_image",
    "list_reference_files",
    "reference_root",
    "reference_cache_key",
    "reference_features",
    "generated_features",
    "fid_from_features",
    "kid_from_features",
    "FID",
    "KID",
]

INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
IMAGE_EXTENSIONS = {"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"}


# --------------------------------------------------------------------------------------------
# feature extractors


@dataclass
class FeatureExtractor:
    """``fn``: (B,3,299,299) float tensor in [0,255] on ``device`` -> (B,D) features.

    ``key`` identifies the extractor in the reference-statistics cache (change it whenever the
    weights change); ``inception`` says whether this is the standard FID Inception network.
    """

    name: str
    key: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    inception: bool = False
    weights: dict[str, str] | None = None


_EXTRACTORS: dict[str, Callable[[EvalContext], FeatureExtractor]] = {}


def register_feature_extractor(name: str, factory: Callable[[EvalContext], FeatureExtractor]) -> None:
    """Register ``factory(ctx) -> FeatureExtractor`` under ``name`` (usable as ``extractor=name``)."""
    _EXTRACTORS[name] = factory


def feature_extractors() -> list[str]:
    """Names accepted by the ``extractor`` option."""
    return sorted(_EXTRACTORS)


def _cleanfid_cache_dir() -> Path:
    # clean-fid's feature_extractor() downloads to "./" on Windows and "/tmp" elsewhere
    return Path("./") if platform.system() == "Windows" else Path("/tmp")


def find_inception(ctx: EvalContext) -> Path:
    """The Inception TorchScript file, or MissingAssetError naming file, folder and URL.

    Order: ``ctx.models["inception"]``, clean-fid's cache folder, ``ctx.cache_dir``; then it
    downloads it into clean-fid's cache when missing, unless offline (``DIGAN_BENCH_OFFLINE=1``
    or no network), in which case the error names the file, the folder and the URL.
    """
    given = ctx.models.get("inception")
    if given:
        p = Path(given).expanduser()
        if p.is_dir():
            p = p / INCEPTION_FILE
        if not p.is_file():
            raise MissingAssetError(
                f"FID Inception weights ({INCEPTION_FILE}) given by --model inception", str(p),
                f"download {INCEPTION_URL} and point --model inception= at it",
            )
        return p
    candidates = [_cleanfid_cache_dir() / INCEPTION_FILE, Path(ctx.cache_dir).expanduser() / INCEPTION_FILE]
    for c in candidates:
        if c.is_file():
            return c
    from digan.utils.download import DownloadError, fetch

    try:  # online: fetch it once into clean-fid's cache, as clean-fid itself would
        return fetch(INCEPTION_URL, candidates[0], f"FID Inception weights ({INCEPTION_FILE})")
    except DownloadError as e:
        why = f" ({e})"
    raise MissingAssetError(
        f"FID Inception weights ({INCEPTION_FILE}){why}", str(candidates[0]),
        f"download {INCEPTION_URL} into {candidates[0].parent} (clean-fid's cache) or "
        f"{candidates[1].parent}, or pass --model inception=PATH",
    )


def inception_extractor(ctx: EvalContext) -> FeatureExtractor:
    """clean-fid's Inception-v3 (pool3, 2048-d) in clean mode, on ``ctx.device``."""
    path = find_inception(ctx)
    device = torch.device(ctx.device)
    if path.name == INCEPTION_FILE:
        from cleanfid.inception_torchscript import InceptionV3W

        model = InceptionV3W(str(path.parent), download=False, resize_inside=False).to(device).eval()

        def fn(x: torch.Tensor) -> torch.Tensor:
            return model(x)
    else:  # same network under another file name: the same normalisation as InceptionV3W
        try:
            base = torch.jit.load(str(path), map_location=device).eval()
        except Exception as e:  # noqa: BLE001 - a corrupt file is a user problem
            raise DiganError(f"{path} is not the FID Inception TorchScript file ({type(e).__name__}); download {INCEPTION_URL}") from e

        def fn(x: torch.Tensor) -> torch.Tensor:
            return base.layers.forward((x - 128) / 128).reshape(x.shape[0], 2048)

    st = path.stat()
    return FeatureExtractor(
        name="inception", key=f"inception-2015-12-05:{st.st_size}", fn=fn, inception=True,
        weights={"inception": str(path)},
    )


def random_projection_extractor(ctx: EvalContext | None = None, dim: int = 64, pool: int = 16, seed: int = 0) -> FeatureExtractor:
    """DEMO-ONLY offline stand-in for Inception: ``relu(W @ avgpool16(x / 127.5 - 1))``.

    ``W`` is a fixed ``dim x (3 * pool * pool)`` Gaussian matrix (seed 0, scaled by
    ``1/sqrt(fan_in)``). It measures low-frequency colour/layout statistics only; numbers made
    with it are labelled ``randproj`` and are *not* FID.
    """
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(3 * pool * pool, dim, generator=g) / math.sqrt(3 * pool * pool)

    def fn(x: torch.Tensor) -> torch.Tensor:
        p = torch.nn.functional.adaptive_avg_pool2d(x.float() / 127.5 - 1.0, pool).reshape(x.shape[0], -1)
        return torch.relu(p @ w.to(p.device))

    return FeatureExtractor(name="randproj", key=f"randproj-v1-d{dim}-p{pool}-s{seed}", fn=fn, inception=False)


register_feature_extractor("inception", inception_extractor)
register_feature_extractor("randproj", random_projection_extractor)


# --------------------------------------------------------------------------------------------
# image preparation


_RESIZER: Callable[[np.ndarray], np.ndarray] | None = None


def _resizer() -> Callable[[np.ndarray], np.ndarray]:
    global _RESIZER
    if _RESIZER is None:
        from cleanfid.resize import build_resizer

        _RESIZER = build_resizer("clean")
    return _RESIZER


def clean_resize(images_uint8: np.ndarray) -> torch.Tensor:
    """(B,H,W,3) uint8 -> (B,3,299,299) float32 in [0,255] with clean-fid's clean resizer."""
    fn = _resizer()
    out = np.stack([fn(np.ascontiguousarray(a)) for a in images_uint8]).astype(np.float32)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def prepare_reference_image(path: str | Path, size: int) -> np.ndarray:
    """Load an image as (size,size,3) uint8: RGB, centre square crop, Lanczos resize if needed."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            if w != h:
                s = min(w, h)
                left, top = (w - s) // 2, (h - s) // 2
                im = im.crop((left, top, left + s, top + s))
            if im.size != (size, size):
                im = im.resize((size, size), resample=Image.LANCZOS)
            return np.asarray(im, dtype=np.uint8)
    except OSError as e:
        raise DiganError(f"reference image {path} is unreadable ({type(e).__name__}); remove or replace it") from e


def reference_root(folder: str | Path) -> Path:
    """The folder whose images are the reference set: ``folder`` itself, or its ``images/``
    subfolder for a synthetic data set (``manifest.json`` of format ``digan-synth-heads``, whose
    root also holds contact sheets that are not samples)."""
    root = Path(folder).expanduser()
    man = root / "manifest.json"
    if man.is_file() and (root / "images").is_dir():
        try:
            fmt = json.loads(man.read_text()).get("format", "")
        except (OSError, ValueError):
            fmt = ""
        if fmt == "digan-synth-heads":
            return root / "images"
    return root


def list_reference_files(folder: str | Path, max_reference: int | None = None) -> list[Path]:
    """Sorted image files under ``folder`` (recursive; clean-fid's extensions; see
    :func:`reference_root` for synthetic data sets)."""
    root = reference_root(folder)
    if not root.is_dir():
        raise DiganError(f"FID reference folder {root} not found; pass --data NAME=FOLDER with real images")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS)
    if not files:
        raise DiganError(f"FID reference folder {root} holds no images; point --data at a folder of .png/.jpg faces")
    if max_reference:
        files = files[: int(max_reference)]
    return files


def reference_cache_key(root: Path, files: list[Path], image_size: int, extractor_key: str, max_reference: int | None) -> tuple[str, str]:
    """``(files_hash, key)``: sha256 of the relative file list with sizes, and the cache key."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(root).as_posix()}\t{f.stat().st_size}\n".encode())
    files_hash = h.hexdigest()
    blob = json.dumps(
        {"files": files_hash, "image_size": int(image_size), "extractor": extractor_key, "mode": "clean",
         "max_reference": max_reference, "v": 1},
        sort_keys=True,
    )
    return files_hash, hashlib.sha256(blob.encode()).hexdigest()


def _extract(ext: FeatureExtractor, x: torch.Tensor, device: torch.device) -> np.ndarray:
    with torch.no_grad():
        f = ext.fn(x.to(device))
    return f.detach().float().cpu().numpy()  # float32: 50k x 2048 Inception features are 400 MB


def reference_features(
    folder: str | Path,
    image_size: int,
    ext: FeatureExtractor,
    ctx: EvalContext,
    max_reference: int | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Reference features (N,D) of ``folder`` at ``image_size``, from the cache or computed
    (sharded across torchrun ranks) and cached. Returns ``(feats, info)``."""
    root = reference_root(folder)
    files = list_reference_files(root, max_reference)
    files_hash, key = reference_cache_key(root, files, image_size, ext.key, max_reference)
    cache = Path(ctx.cache_dir).expanduser() / "fid-ref" / f"{_safe(root.name)}-{image_size}-{key[:16]}.npz"
    info = {"path": str(root), "n_files": len(files), "files_hash": files_hash, "image_size": int(image_size),
            "extractor": ext.key, "cache_file": str(cache), "cache_key": key}
    exists = cache.is_file()
    if dist.is_distributed():
        exists = dist.all_gather_objects(exists)[0]
    if exists:
        try:
            with np.load(cache) as z:
                feats = z["feats"].astype(np.float32)
            if feats.shape[0] == len(files):
                info["cached"] = True
                return feats, info
        except (OSError, KeyError, ValueError):
            pass  # damaged cache: recompute and replace it
    device = torch.device(ctx.device)
    idx = ctx.shard(len(files))
    parts = []
    for s in range(idx.start, idx.stop, ctx.batch_size):
        batch = [prepare_reference_image(files[i], image_size) for i in range(s, min(s + ctx.batch_size, idx.stop))]
        parts.append(_extract(ext, clean_resize(np.stack(batch)), device))
        ctx.advance(len(batch))
    local = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    feats = _gather_np(local, ctx)
    if dist.is_main():
        import io

        buf = io.BytesIO()
        np.savez(buf, feats=feats.astype(np.float32), mu=feats.mean(0, dtype=np.float64), sigma=np.cov(feats, rowvar=False),
                 meta=json.dumps(info))
        write_bytes(cache, buf.getvalue())
    info["cached"] = False
    return feats, info


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "data"


def _gather_np(local: np.ndarray, ctx: EvalContext) -> np.ndarray:
    """Concatenate per-rank (n_r, D) feature arrays in rank order (identity without torchrun).

    Every rank takes part in every collective, also a rank with no faces (n < world size).
    """
    if not dist.is_distributed():
        return local
    d = int(local.shape[1]) if local.ndim == 2 and local.shape[0] else 0
    dims = [x for x in dist.all_gather_objects(d) if x]
    if d == 0:
        local = np.zeros((0, dims[0] if dims else 0), np.float32)
    t = torch.from_numpy(np.ascontiguousarray(local, dtype=np.float32))
    return ctx.gather(t).numpy()


# --------------------------------------------------------------------------------------------
# generated features (shared by fid and kid)


_GEN_CACHE: dict[str, Any] = {}


def _n_generated(method: Method, ctx: EvalContext) -> int:
    n = int(ctx.n_faces)
    cap = method.capabilities.max_faces
    return min(n, int(cap)) if cap else n


def generated_features(method: Method, ctx: EvalContext, ext: FeatureExtractor) -> tuple[np.ndarray, int]:
    """Features (n,D) of faces ``0..n-1`` rendered frontal, and the image size.

    Each rank renders ``ctx.shard(n)``; the result is gathered in index order on every rank.
    """
    n = _n_generated(method, ctx)
    key = (ctx.seed, n, ext.key, ctx.device, dist.rank(), dist.world_size())
    c = _GEN_CACHE.get("entry")
    if c is not None and c["method"]() is method and c["key"] == key:
        ctx.advance(n)
        return c["feats"], c["size"]
    device = torch.device(ctx.device)
    idx = ctx.shard(n)
    parts: list[np.ndarray] = []
    size = int(method.capabilities.image_size or 0)
    for s in range(idx.start, idx.stop, ctx.batch_size):
        b = min(ctx.batch_size, idx.stop - s)
        with torch.no_grad():
            lat = method.latents(b, ctx.seed, start=s)
            img = method.render(lat, yaw=0.0, pitch=0.0).image
        if img.ndim != 4 or img.shape[1] != 3:
            raise TypeError(f"method {method.name} rendered images of shape {tuple(img.shape)}, expected (B,3,H,W)")
        size = int(img.shape[-1])
        parts.append(_extract(ext, clean_resize(to_uint8(img)), device))
        ctx.advance(b)
    local = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    feats = _gather_np(local, ctx)
    if dist.is_distributed():
        size = max(dist.all_gather_objects(size))
    if size <= 0:
        raise DiganError(f"method {method.name} produced no images for FID; increase --n-faces")
    # a weak reference: the cache never keeps a finished method (and its GPU memory) alive
    _GEN_CACHE["entry"] = {"method": weakref.ref(method), "key": key, "feats": feats, "size": size}
    return feats, size


# --------------------------------------------------------------------------------------------
# the numbers


def fid_from_features(gen: np.ndarray, ref: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (clean-fid's formula)."""
    from cleanfid.fid import frechet_distance

    if gen.shape[0] < 2 or ref.shape[0] < 2:
        raise DiganError("FID needs at least 2 generated and 2 reference images; increase --n-faces or the reference set")
    gen, ref = np.asarray(gen, np.float64), np.asarray(ref, np.float64)
    mu1, s1 = gen.mean(0), np.atleast_2d(np.cov(gen, rowvar=False))
    mu2, s2 = ref.mean(0), np.atleast_2d(np.cov(ref, rowvar=False))
    return float(frechet_distance(mu1, s1, mu2, s2))


def kid_from_features(
    gen: np.ndarray, ref: np.ndarray, num_subsets: int = 100, max_subset_size: int = 1000, seed: int = 0
) -> tuple[float, float, int]:
    """clean-fid's KID with numpy's global generator seeded by ``seed`` (state restored).

    Returns ``(kid, std over subsets, subset size)``. Calling ``kernel_distance`` once per
    subset in one seeded stream draws exactly the subsets of a single ``num_subsets`` call, so
    the mean equals clean-fid's value.
    """
    from cleanfid.fid import kernel_distance

    gen, ref = np.asarray(gen, np.float64), np.asarray(ref, np.float64)
    m = min(gen.shape[0], ref.shape[0], max_subset_size)
    if m < 2:
        raise DiganError("KID needs at least 2 generated and 2 reference images; increase --n-faces")
    state = np.random.get_state()
    try:
        np.random.seed(seed % (2**32))
        vals = [kernel_distance(gen, ref, num_subsets=1, max_subset_size=max_subset_size) for _ in range(num_subsets)]
    finally:
        np.random.set_state(state)
    v = np.asarray(vals, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, m


# --------------------------------------------------------------------------------------------
# metrics


class _FeatureMetric(Metric):
    """Common options and plumbing of FID and KID."""

    # no capability needed: a fixed folder of samples (generate=False, max_faces) is scored over
    # its images just like a generator's renders
    requires = ()

    def __init__(
        self,
        dataset: str = "ffhq",
        extractor: str = "inception",
        max_reference: int | None = None,
        feature_extractor: FeatureExtractor | Callable[[torch.Tensor], torch.Tensor] | None = None,
        extractor_key: str | None = None,
    ):
        self.dataset = dataset
        self.extractor = extractor
        self.max_reference = max_reference
        if feature_extractor is not None and not isinstance(feature_extractor, FeatureExtractor):
            feature_extractor = FeatureExtractor(
                name=extractor_key or "custom", key=extractor_key or "custom", fn=feature_extractor, inception=False
            )
        self._custom = feature_extractor

    def _extractor(self, ctx: EvalContext) -> FeatureExtractor:
        if self._custom is not None:
            return self._custom
        if self.extractor not in _EXTRACTORS:
            raise DiganError(f"unknown FID feature extractor '{self.extractor}'; choose from: {', '.join(feature_extractors())}")
        return _EXTRACTORS[self.extractor](ctx)

    def _folder(self, ctx: EvalContext) -> str:
        if self.dataset not in ctx.data:
            have = ", ".join(sorted(ctx.data)) or "none"
            raise DiganError(
                f"{self.name.upper()} needs reference images '{self.dataset}': pass --data {self.dataset}=FOLDER "
                f"(data sets given: {have}) or choose another with --set metric_options.{self.name}.dataset=NAME"
            )
        return ctx.data[self.dataset]

    def check_inputs(self, ctx: EvalContext) -> list[str]:
        """The reference folder and (for ``extractor=inception``) the Inception file; the same
        lines for FID and KID, so a run with both lists each problem once."""
        out: list[str] = []
        if self.dataset not in ctx.data:
            have = ", ".join(sorted(ctx.data)) or "none"
            out.append(f"FID/KID need reference images '{self.dataset}': pass --data {self.dataset}=FOLDER "
                       f"(data sets given: {have}) or use another with --set metric_options.fid.dataset=NAME (and kid)")
        elif not Path(ctx.data[self.dataset]).expanduser().is_dir():
            out.append(f"FID/KID reference folder {ctx.data[self.dataset]} not found; fix --data {self.dataset}=FOLDER")
        if self._custom is None:
            if self.extractor not in _EXTRACTORS:
                out.append(f"unknown FID feature extractor '{self.extractor}'; choose from: {', '.join(feature_extractors())}")
            elif self.extractor == "inception":
                try:
                    find_inception(ctx)
                except DiganError as e:
                    out.append(str(e))
        return out

    def config(self, ctx: EvalContext) -> dict[str, Any]:
        ext = self._custom.key if self._custom is not None else self.extractor
        return {
            "n_faces": ctx.n_faces, "seed": ctx.seed, "view": {"yaw": 0.0, "pitch": 0.0}, "mode": "clean",
            "dataset": self.dataset, "reference_path": ctx.data.get(self.dataset), "extractor": ext,
            "max_reference": self.max_reference,
        }

    def work_units(self, method: Method, ctx: EvalContext) -> int:
        n = _n_generated(method, ctx)
        try:
            n_ref = len(list_reference_files(self._folder(ctx), self.max_reference))
        except DiganError:
            n_ref = 0
        return n + n_ref  # the reference part is skipped (and the bar jumps) when cached

    def _features(self, method: Method, ctx: EvalContext) -> tuple[np.ndarray, np.ndarray, FeatureExtractor, dict[str, Any]]:
        folder = self._folder(ctx)
        list_reference_files(folder, self.max_reference)  # fail fast before rendering
        ext = self._extractor(ctx)
        gen, size = generated_features(method, ctx, ext)
        ref, info = reference_features(folder, size, ext, ctx, self.max_reference)
        if ref.shape[1] != gen.shape[1]:
            raise DiganError(f"reference features have {ref.shape[1]} dims but generated ones {gen.shape[1]}; delete {info['cache_file']}")
        return gen, ref, ext, info

    def _record(self, method: Method, ctx: EvalContext, value: float, gen: np.ndarray, ref: np.ndarray,
                ext: FeatureExtractor, info: dict[str, Any], stats: dict[str, Any]) -> Record:
        label = self.dataset if ext.inception else f"{self.dataset} [{ext.name} features, not Inception]"
        cfg = {
            **self.config(ctx),
            "extractor": ext.key,
            "inception": ext.inception,
            "reference": {k: v for k, v in info.items() if k != "cached"},
            "sample_count": "FID/KID depend on the number of samples; compare only equal n_faces (paper: 50,000)",
        }
        return Record(
            method=method.name, metric=self.name, setting="overall", value=value, unit=self.unit,
            higher_is_better=False, stats={"n": int(gen.shape[0]), "n_ref": int(ref.shape[0]),
                                           "feature_dim": int(gen.shape[1]), **stats},
            dataset=label, n_faces=int(gen.shape[0]), config=cfg, weights=dict(ext.weights or {}),
        )


@register_metric
class FID(_FeatureMetric):
    """Frechet Inception Distance (clean-fid, clean resize, frontal view) against a reference folder."""

    name = "fid"
    unit = ""
    higher_is_better = False

    def compute(self, method: Method, ctx: EvalContext) -> list[Record]:
        import warnings

        gen, ref, ext, info = self._features(method, ctx)
        # scipy's sqrtm warns (LinAlgWarning) when the covariance product is singular, e.g. with
        # fewer images than feature dimensions; the value is still clean-fid's. Recorded as a note
        # in the record's stats instead of being printed to the terminal.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = fid_from_features(gen, ref)
        notes = sorted({f"{w.category.__name__}: {w.message}" for w in caught
                        if w.category.__name__ == "LinAlgWarning" or issubclass(w.category, RuntimeWarning)})
        return [self._record(method, ctx, value, gen, ref, ext, info, {"notes": notes} if notes else {})]


@register_metric
class KID(_FeatureMetric):
    """Kernel Inception Distance (clean-fid's unbiased polynomial-kernel MMD^2 over subsets)."""

    name = "kid"
    unit = ""
    higher_is_better = False

    def __init__(self, num_subsets: int = 100, max_subset_size: int = 1000, **kw: Any):
        super().__init__(**kw)
        self.num_subsets = int(num_subsets)
        self.max_subset_size = int(max_subset_size)

    def config(self, ctx: EvalContext) -> dict[str, Any]:
        return {**super().config(ctx), "num_subsets": self.num_subsets, "max_subset_size": self.max_subset_size,
                "kernel": "(x.y/d + 1)^3"}

    def compute(self, method: Method, ctx: EvalContext) -> list[Record]:
        gen, ref, ext, info = self._features(method, ctx)
        value, std, m = kid_from_features(gen, ref, self.num_subsets, self.max_subset_size, seed=ctx.seed)
        return [self._record(method, ctx, value, gen, ref, ext, info,
                             {"std": std, "subsets": self.num_subsets, "subset_size": m})]
