"""Synthetic clay-warrior heads with 3D ground truth (``digan-bench data synth``).

The paper cannot evaluate its 3D output for lack of ground truth; this data set has it. Each
identity (:mod:`digan.data.heads`) is rendered with :class:`digan.render.MeshRenderer` at
several random views and lights, and every sample stores its image together with the exact
depth, normals, foreground mask, damage mask, view, light and identity parameters, plus the
identity's canonical (frontal) depth, albedo, normals and masks.

Sampling (all from ``numpy`` generators keyed by ``(seed, index)``, so any sample can be
regenerated alone and sharded or resumed runs draw the same data): sample ``i`` shows identity
``i // views_per_identity``; yaw, pitch and roll are uniform in ``+-yaw_range``, ``+-pitch_range``
and ``+-roll_range`` degrees, ``tx, ty, tz`` uniform in ``+-translation_range``; ambient and
diffuse strengths uniform in their ranges and the light direction ``(dx, dy)`` uniform in
``+-light_xy_range`` (conventions: :mod:`digan.render.types`, :mod:`digan.render.shading`).

Rendering: the head-only mesh (faces inside the bust's silhouette, ``vertex_mask``) is
rendered over a backdrop (soft vertical gradient in a muted colour, per sample). The image is
anti-aliased by rendering the same continuous head from ``supersample`` x finer canonical maps
and box-filtering; the ground-truth maps are the renderer's exact output at the data set size
(no anti-aliasing), so ``depth``, ``normal`` and ``mask`` are reproduced bit-for-bit by
:func:`render_views` from the stored parameters.

Layout of a data set folder::

    manifest.json            format, config, fields (file, shape, dtype, units), conventions,
                             per-sample and per-identity metadata, provenance
    config.json, run.json    the SynthConfig and the provenance record
    images/000000.png ...    8-bit RGB images (identical to arrays/images.npy)
    arrays/*.npy             one array per field (memory-mappable), see ``manifest["fields"]``
    contact_sheet.png        the first 64 images
    ground_truth_sheet.png   image, depth, normals, mask, damage, canonical albedo/depth of 8 samples

Undamaged twins (``twins=True``, ``digan-bench data synth --twins``): every sample also gets the
same identity without damage (:func:`digan.data.heads.undamaged`: no chips, nothing missing)
rendered at the same view, light and backdrop, so restoration of the damaged image has exact
ground truth. Extra fields ``twin_images``, ``twin_depth``, ``twin_normal``, ``twin_mask`` and
``restore_mask`` (the region to restore: the visible damage plus what the twin shows and the
damaged head lacks, e.g. a missing ear, dilated by one pixel so anti-aliased edges count as
damaged), and folders ``twins/`` (PNG) and ``restore_masks/`` (PNG, white = restore), the layout
``digan-bench restore --images images --masks restore_masks`` reads. An undamaged sample is its
own twin with an empty restore mask. ``missing_prob`` sets how often each part (nose tip,
topknot, ear) of a damaged head is missing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from digan.data.heads import (
    BACKGROUND_DEPTH,
    PARAM_NAMES,
    PARAMS,
    head_maps,
    params_to_vector,
    sample_identity,
    undamaged,
)
from digan.errors import DiganError
from digan.render.renderer import MeshRenderer, RendererConfig
from digan.render.shading import normals_from_depth
from digan.render.types import Light, View

__all__ = [
    "SynthConfig",
    "SIZES",
    "FORMAT",
    "FORMAT_VERSION",
    "sample_view_light",
    "read_synth_config",
    "identity_backdrops",
    "render_views",
    "generate_synth",
    "write_synth",
    "SynthDataset",
    "load_synth",
]

SIZES = (64, 128, 256)
FORMAT = "digan-synth-heads"
FORMAT_VERSION = 1


@dataclass
class SynthConfig:
    """Synthetic data set settings (``--set key=value`` overrides these)."""

    n: int = 200
    size: int = 64
    seed: int = 0
    views_per_identity: int = 4
    yaw_range: float = 35.0  # degrees, uniform in +-range
    pitch_range: float = 12.0
    roll_range: float = 5.0
    translation_range: float = 0.004  # camera units (image half-width at depth 1 is 0.0875)
    ambient_range: tuple[float, float] = (0.35, 0.65)
    diffuse_range: tuple[float, float] = (0.35, 0.75)
    light_xy_range: float = 0.8
    damage_prob: float = 0.5
    missing_prob: float = 0.3  # each part (nose tip, topknot, ear) of a damaged head is missing with this probability
    twins: bool = False  # also render each sample's undamaged twin and the restore mask (module docstring)
    supersample: int = 2
    backdrop: Literal["gradient", "white"] = "gradient"
    batch_size: int = 32  # samples per render batch at 64 px; scaled down by (64 / size)^2 above
    fov: float = 10.0
    threads: int = 1  # torch CPU threads while generating (0 = leave torch's setting); see generate_synth

    def validate(self) -> None:
        if self.size not in SIZES:
            raise DiganError(f"bad size {self.size}: choose one of {', '.join(map(str, SIZES))}")
        if self.n < 1:
            raise DiganError(f"bad n {self.n}: ask for at least 1 sample")
        if self.views_per_identity < 1:
            raise DiganError(f"bad views_per_identity {self.views_per_identity}: use 1 or more")
        if self.seed < 0:
            raise DiganError(f"bad seed {self.seed}: use 0 or more (sample i depends only on seed and i)")
        if self.supersample not in (1, 2, 4):
            raise DiganError(f"bad supersample {self.supersample}: choose 1, 2 or 4")
        if self.backdrop not in ("gradient", "white"):
            raise DiganError(f"bad backdrop {self.backdrop!r}: choose gradient or white")
        for name, v in (("yaw_range", self.yaw_range), ("pitch_range", self.pitch_range), ("roll_range", self.roll_range)):
            if not 0 <= v <= 60:
                raise DiganError(f"bad {name} {v}: use 0..60 degrees (the depth-map mesh cannot show more)")
        if not 0 <= self.translation_range <= 0.05:
            raise DiganError(f"bad translation_range {self.translation_range}: use 0..0.05")
        for name, (lo, hi) in (("ambient_range", self.ambient_range), ("diffuse_range", self.diffuse_range)):
            if not 0 <= lo <= hi <= 2:
                raise DiganError(f"bad {name} ({lo}, {hi}): need 0 <= low <= high <= 2")
        if not 0 <= self.damage_prob <= 1:
            raise DiganError(f"bad damage_prob {self.damage_prob}: use a probability in [0, 1]")
        if not 0 <= self.missing_prob <= 1:
            raise DiganError(f"bad missing_prob {self.missing_prob}: use a probability in [0, 1]")
        if self.batch_size < 1:
            raise DiganError(f"bad batch_size {self.batch_size}: use 1 or more")
        if self.threads < 0:
            raise DiganError(f"bad threads {self.threads}: use 0 (torch default) or a positive count")

    @property
    def n_identities(self) -> int:
        return math.ceil(self.n / self.views_per_identity)


# ----------------------------------------------------------------------------- sampling
def sample_view_light(cfg: SynthConfig, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample ``index``'s view ``(pitch, yaw, roll, tx, ty, tz)``, light ``(ambient, diffuse, dx,
    dy)`` and backdrop ``(top RGB, bottom RGB in [0, 1], 25 values of a 5x5 noise lattice)``;
    depends only on ``(seed, index)``."""
    rng = np.random.default_rng([int(cfg.seed), int(index), 2])
    rot = rng.uniform(-1, 1, 3) * np.array([cfg.pitch_range, cfg.yaw_range, cfg.roll_range])
    trans = rng.uniform(-1, 1, 3) * cfg.translation_range
    amb = rng.uniform(*cfg.ambient_range)
    dif = rng.uniform(*cfg.diffuse_range)
    dxy = rng.uniform(-1, 1, 2) * cfg.light_xy_range
    hue = rng.uniform(0, 1)
    base = np.array([0.62, 0.60, 0.56]) * (1 - hue) + np.array([0.50, 0.56, 0.62]) * hue
    base = base * rng.uniform(0.75, 1.2)
    top, bottom = base * rng.uniform(1.0, 1.15), base * rng.uniform(0.7, 0.9)
    lattice = rng.uniform(-1, 1, 25)
    return (
        np.concatenate([rot, trans]).astype(np.float32),
        np.array([amb, dif, *dxy], dtype=np.float32),
        np.concatenate([np.clip(np.concatenate([top, bottom]), 0, 1), lattice]).astype(np.float32),
    )


def read_synth_config(path: str | Path) -> SynthConfig:
    """The :class:`SynthConfig` a ``digan-bench data synth`` set at ``path`` was made with (its
    ``config.json``; the defaults when the file is absent)."""
    import json

    from digan.config import from_dict

    f = Path(path).expanduser() / "config.json"
    return from_dict(SynthConfig, json.loads(f.read_text())) if f.is_file() else SynthConfig()


def identity_backdrops(cfg: SynthConfig, sample_identity: np.ndarray, identities: list[int]) -> np.ndarray:
    """One backdrop row (:func:`sample_view_light`) per entry of ``identities``: that of the
    identity's first sample in the set (``sample_identity`` = the set's ``identity`` array), so
    an identity re-rendered at other views or lights sits on the backdrop it was imaged on."""
    first: dict[int, int] = {}
    for i, v in enumerate(np.asarray(sample_identity).tolist()):
        first.setdefault(int(v), i)
    return np.stack([sample_view_light(cfg, first[int(k)])[2] for k in identities])


def _backdrop(spec: torch.Tensor, size: int) -> torch.Tensor:
    """(B,3,S,S) in [-1,1]: vertical gradient top -> bottom with faint low-frequency noise
    (``spec`` rows from :func:`sample_view_light`)."""
    b = spec.shape[0]
    t = torch.linspace(0, 1, size).view(1, 1, size, 1)
    top, bottom = spec[:, :3, None, None], spec[:, 3:6, None, None]
    img = top * (1 - t) + bottom * t
    lat = spec[:, 6:31].reshape(b, 1, 5, 5)
    img = img * (1 + 0.04 * F.interpolate(lat, size=(size, size), mode="bicubic", align_corners=True))
    return img.expand(b, 3, size, size).clamp(0, 1) * 2 - 1


def _stack_maps(params: list[dict[str, float]], size: int) -> dict[str, torch.Tensor]:
    cache: dict[bytes, Any] = {}  # identities repeat across the views of a batch
    maps = []
    for p in params:
        key = params_to_vector(p).tobytes()
        if key not in cache:
            cache[key] = head_maps(p, size)
        maps.append(cache[key])
    return {k: torch.stack([getattr(m, k) for m in maps]) for k in ("depth", "albedo", "mask", "damage")}


def render_views(
    params: list[dict[str, float]],
    views: np.ndarray,
    lights: np.ndarray,
    size: int,
    fov: float = 10.0,
    supersample: int = 1,
    backdrops: np.ndarray | None = None,
) -> dict[str, torch.Tensor]:
    """Render identities ``params[k]`` at ``views[k]`` (pitch, yaw, roll, tx, ty, tz) under
    ``lights[k]`` (ambient, diffuse, dx, dy); the function behind every stored sample.

    Returns ground truth at ``size`` -- ``depth`` (B,1,S,S; the renderer's background depth 1.2
    outside the mask), ``normal`` (B,3,S,S; 0 outside), ``mask`` (B,1,S,S) and ``damage``
    (B,1,S,S, the view-space damage mask) -- and the ``image`` (B,3,S,S in [-1,1]) rendered at
    ``supersample`` x the size over the backdrops (white when ``backdrops`` is None) and
    box-filtered down.
    """
    b = len(params)
    view = View(torch.from_numpy(np.asarray(views[:, :3], np.float32)), torch.from_numpy(np.asarray(views[:, 3:], np.float32)))
    li = torch.from_numpy(np.asarray(lights, np.float32))
    light = Light(li[:, 0], li[:, 1], li[:, 2:4])
    gt = _stack_maps(params, size)
    r = MeshRenderer(RendererConfig(image_size=size, fov=fov))
    out = r.render(gt["depth"], gt["albedo"], view, light, vertex_mask=gt["mask"], extra=gt["damage"])
    res = {
        "depth": out.depth,
        "normal": out.normal,
        "mask": out.mask,
        "damage": (out.extra > 0.5).float(),
    }
    big = size * supersample
    hi = _stack_maps(params, big) if supersample > 1 else gt
    rh = MeshRenderer(RendererConfig(image_size=big, fov=fov)) if supersample > 1 else r
    oh = rh.render(hi["depth"], hi["albedo"], view, light, vertex_mask=hi["mask"]) if supersample > 1 else out
    if backdrops is None:
        bg = torch.ones(b, 3, big, big)
    else:
        bg = _backdrop(torch.from_numpy(np.asarray(backdrops, np.float32)), big)
    img = oh.image * oh.mask + bg * (1 - oh.mask)
    if supersample > 1:
        img = F.avg_pool2d(img, supersample)
    res["image"] = img.clamp(-1, 1)
    return res


# ----------------------------------------------------------------------------- writing
_FIELDS: dict[str, dict[str, Any]] = {
    "images": {"dtype": "uint8", "shape": "N,S,S,3", "units": "sRGB 0..255", "description": "the rendered image (same as images/*.png)"},
    "depth": {"dtype": "float32", "shape": "N,S,S", "units": "camera depth z (camera units; background = renderer bg_depth)", "description": "depth of the visible surface per pixel"},
    "normal": {"dtype": "float16", "shape": "N,3,S,S", "units": "unit vector, camera axes (x right, y down, z forward); n_z > 0 faces the camera; 0 outside the mask", "description": "view-space surface normals"},
    "mask": {"dtype": "uint8", "shape": "N,S,S", "units": "0/1", "description": "foreground (the bust) coverage"},
    "damage": {"dtype": "uint8", "shape": "N,S,S", "units": "0/1", "description": "visible damaged surface (chips, missing parts)"},
    "view": {"dtype": "float32", "shape": "N,6", "units": "degrees (pitch, yaw, roll), camera units (tx, ty, tz)", "description": "view applied to the canonical head"},
    "light": {"dtype": "float32", "shape": "N,4", "units": "ambient, diffuse, dx, dy", "description": "Lambertian light"},
    "identity": {"dtype": "int32", "shape": "N", "units": "index", "description": "identity shown (row of the canonical_* arrays)"},
    "canonical_depth": {"dtype": "float32", "shape": "I,S,S", "units": "camera depth", "description": "frontal depth of each identity (a plane at 1.04 outside the bust)"},
    "canonical_albedo": {"dtype": "float16", "shape": "I,3,S,S", "units": "[-1, 1]", "description": "albedo in the canonical frame (white outside)"},
    "canonical_normal": {"dtype": "float16", "shape": "I,3,S,S", "units": "unit vector, camera axes", "description": "normals of canonical_depth"},
    "canonical_mask": {"dtype": "uint8", "shape": "I,S,S", "units": "0/1", "description": "silhouette of the bust in the canonical frame"},
    "canonical_damage": {"dtype": "uint8", "shape": "I,S,S", "units": "0/1", "description": "damage (chips, missing parts) in the canonical frame"},
    "identity_params": {"dtype": "float64", "shape": "I,P", "units": "see identity_param_names", "description": "procedural parameters of each identity"},
}
# written only with ``twins`` (module docstring)
_TWIN_FIELDS: dict[str, dict[str, Any]] = {
    "twin_images": {"dtype": "uint8", "shape": "N,S,S,3", "units": "sRGB 0..255", "description": "the undamaged twin: same identity, view, light and backdrop (twins/*.png)"},
    "twin_depth": {"dtype": "float32", "shape": "N,S,S", "units": "camera depth z", "description": "depth of the twin's visible surface"},
    "twin_normal": {"dtype": "float16", "shape": "N,3,S,S", "units": "unit vector, camera axes", "description": "view-space normals of the twin"},
    "twin_mask": {"dtype": "uint8", "shape": "N,S,S", "units": "0/1", "description": "the twin's foreground coverage"},
    "restore_mask": {"dtype": "uint8", "shape": "N,S,S", "units": "0/1", "description": "region to restore: damage | (twin_mask & ~mask), dilated 1 px (restore_masks/*.png)"},
}


def _conventions(cfg: SynthConfig) -> dict[str, str]:
    return {
        "camera": f"pinhole at the origin looking down +z, x right, y down, fov {cfg.fov} deg, f = (S-1)/2/tan(fov/2), centre (S-1)/2",
        "view": "R = Rz(roll) Ry(yaw) Rx(pitch) about (0, 0, 1), then translation; positive yaw moves the nose toward image +x",
        "light": "shading = ambient + diffuse * max(0, n . l), l = normalize(dx, dy, 1), image = albedo * shading (in [0,1])",
        "normal": "central differences of the point grid, n = dP/du x dP/dv normalised (n_z > 0 facing the camera), as Unsup3d",
        "depth_mesh": "one vertex per canonical pixel, two triangles per pixel quad, only faces inside the canonical mask",
        "image": f"rendered at {cfg.supersample}x and box-filtered over a backdrop; ground truth maps are exact renders at the data set size",
    }


def generate_synth(
    out: str | Path,
    n: int | None = None,
    size: int | None = None,
    seed: int | None = None,
    force: bool = False,
    config: SynthConfig | None = None,
) -> Path:
    """Write a synthetic data set to ``out`` (atomically; ``force`` replaces an existing one).

    ``n``, ``size`` and ``seed`` override the corresponding ``config`` fields. Returns ``out``.

    Threads: the work is many small tensor operations (maps of 64-512 px), where torch's
    intra-op thread pool gains little and, on a CPU shared with other jobs, loses a lot (its
    threads wait for each other); ``config.threads`` (default 1) is therefore set for the
    duration of the call and restored afterwards. Results do not depend on it.
    """
    cfg = config or SynthConfig()
    if n is not None or size is not None or seed is not None:
        cfg = SynthConfig(**{**cfg.__dict__, **{k: v for k, v in (("n", n), ("size", size), ("seed", seed)) if v is not None}})
    cfg.validate()
    prev_threads = torch.get_num_threads()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    try:
        _generate(out, cfg, force)
    finally:
        torch.set_num_threads(prev_threads)
    return Path(out)


def _generate(out: str | Path, cfg: SynthConfig, force: bool) -> None:
    from PIL import Image

    from digan.config import to_dict
    from digan.utils.io import atomic_dir, write_json
    from digan.utils.progress import progress
    from digan.utils.provenance import run_info

    s, n_id = cfg.size, cfg.n_identities
    # keep the rendered pixels per batch (and so the memory) at most what batch_size gives at 64 px
    step = max(1, (cfg.batch_size * 64 * 64) // (s * s))
    t0 = time.perf_counter()
    with atomic_dir(out, force=force) as tmp:
        (tmp / "images").mkdir()
        (tmp / "arrays").mkdir()
        shapes = {
            "images": (cfg.n, s, s, 3), "depth": (cfg.n, s, s), "normal": (cfg.n, 3, s, s), "mask": (cfg.n, s, s),
            "damage": (cfg.n, s, s), "view": (cfg.n, 6), "light": (cfg.n, 4), "identity": (cfg.n,),
            "canonical_depth": (n_id, s, s), "canonical_albedo": (n_id, 3, s, s), "canonical_normal": (n_id, 3, s, s),
            "canonical_mask": (n_id, s, s), "canonical_damage": (n_id, s, s), "identity_params": (n_id, len(PARAM_NAMES) + 1),
        }
        arr = {
            k: np.lib.format.open_memmap(tmp / "arrays" / f"{k}.npy", mode="w+", dtype=np.dtype(_FIELDS[k]["dtype"]), shape=shp)
            for k, shp in shapes.items()
        }
        if cfg.twins:
            (tmp / "twins").mkdir()
            (tmp / "restore_masks").mkdir()
            for k in _TWIN_FIELDS:
                shapes[k] = (cfg.n, 3, s, s) if k == "twin_normal" else ((cfg.n, s, s, 3) if k == "twin_images" else (cfg.n, s, s))
                arr[k] = np.lib.format.open_memmap(tmp / "arrays" / f"{k}.npy", mode="w+", dtype=np.dtype(_TWIN_FIELDS[k]["dtype"]), shape=shapes[k])
        params = [sample_identity(cfg.seed, k, cfg.damage_prob, cfg.missing_prob) for k in range(n_id)]
        samples, identities = [], []
        for k, p in enumerate(params):
            arr["identity_params"][k] = params_to_vector(p)
        with progress() as bar:
            task = bar.add_task("synth heads", total=cfg.n, info="")
            for start in range(0, cfg.n, step):
                idx = list(range(start, min(cfg.n, start + step)))
                vl = [sample_view_light(cfg, i) for i in idx]
                views = np.stack([v[0] for v in vl])
                lights = np.stack([v[1] for v in vl])
                backs = np.stack([v[2] for v in vl])
                ids = [i // cfg.views_per_identity for i in idx]
                res = render_views(
                    [params[j] for j in ids], views, lights, s, cfg.fov, cfg.supersample,
                    None if cfg.backdrop == "white" else backs,
                )
                img8 = ((res["image"].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
                sl = slice(idx[0], idx[-1] + 1)
                arr["images"][sl] = img8
                arr["depth"][sl] = res["depth"][:, 0].numpy()
                arr["normal"][sl] = res["normal"].numpy().astype(np.float16)
                arr["mask"][sl] = res["mask"][:, 0].numpy().astype(np.uint8)
                arr["damage"][sl] = res["damage"][:, 0].numpy().astype(np.uint8)
                arr["view"][sl] = views
                arr["light"][sl] = lights
                arr["identity"][sl] = np.asarray(ids, np.int32)
                if cfg.twins:
                    _write_twins(tmp, arr, cfg, idx, [params[j] for j in ids], views, lights, backs, res, img8)
                for j, i in enumerate(idx):
                    # plain writes: the whole folder is swapped in atomically at the end
                    Image.fromarray(img8[j]).save(tmp / "images" / f"{i:06d}.png", format="PNG")
                    samples.append({
                        "index": i,
                        "image": f"images/{i:06d}.png",
                        "identity": ids[j],
                        "view": dict(zip(("pitch", "yaw", "roll", "tx", "ty", "tz"), map(float, views[j]))),
                        "light": dict(zip(("ambient", "diffuse", "dx", "dy"), map(float, lights[j]))),
                    })
                # canonical maps of identities first seen in this batch
                new = sorted({j for j in ids if j * cfg.views_per_identity >= idx[0]})
                if new:
                    cm = _stack_maps([params[j] for j in new], s)
                    cn = normals_from_depth(cm["depth"], cfg.fov)
                    for q, j in enumerate(new):
                        arr["canonical_depth"][j] = cm["depth"][q, 0].numpy()
                        arr["canonical_albedo"][j] = cm["albedo"][q].numpy().astype(np.float16)
                        arr["canonical_normal"][j] = cn[q].numpy().astype(np.float16)
                        arr["canonical_mask"][j] = cm["mask"][q, 0].numpy().astype(np.uint8)
                        arr["canonical_damage"][j] = cm["damage"][q, 0].numpy().astype(np.uint8)
                bar.update(task, advance=len(idx), info=f"{len(samples)}/{cfg.n}")
        for a in arr.values():
            a.flush()
        for k, p in enumerate(params):
            identities.append({
                "index": k,
                "params": {name: p[name] for name in PARAM_NAMES},
                "noise_seed": int(p["noise_seed"]),
                "chips": int(p["damage_chips"]),
                "missing": [part for part in ("nose", "topknot", "ear") if p[f"broken_{part}"] > 0.5],
            })
        fields = {}
        for k, spec in {**_FIELDS, **(_TWIN_FIELDS if cfg.twins else {})}.items():
            fields[k] = {**spec, "file": f"arrays/{k}.npy", "shape": list(shapes[k])}
        prov = run_info("data", config=cfg, seeds={"seed": cfg.seed})
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "size": s,
            "n": cfg.n,
            "n_identities": n_id,
            "views_per_identity": cfg.views_per_identity,
            "config": to_dict(cfg),
            "renderer": {"fov": cfg.fov, "min_depth": 0.9, "max_depth": 1.1, "pivot_depth": 1.0,
                          "background_depth": RendererConfig(image_size=s).bg_depth,
                          "canonical_background_depth": BACKGROUND_DEPTH},
            "conventions": _conventions(cfg),
            "fields": fields,
            "identity_param_names": PARAM_NAMES + ["noise_seed"],
            "identity_param_ranges": {k: [lo, hi, desc] for k, (lo, hi, desc) in PARAMS.items()},
            "samples": samples,
            "identities": identities,
            "generation_seconds": round(time.perf_counter() - t0, 3),
            "provenance": prov,
        }
        write_json(tmp / "manifest.json", manifest)
        write_json(tmp / "config.json", to_dict(cfg))
        write_json(tmp / "run.json", prov)
        _write_sheets(tmp, arr, cfg)
        del arr


write_synth = generate_synth


def _write_twins(tmp: Path, arr: dict[str, np.ndarray], cfg: SynthConfig, idx: list[int], params: list[dict[str, float]],
                 views: np.ndarray, lights: np.ndarray, backs: np.ndarray, res: dict[str, torch.Tensor], img8: np.ndarray) -> None:
    """Render the undamaged twins of one batch (only damaged samples are re-rendered; an
    undamaged sample is its own twin) and write their arrays, PNGs and restore masks."""
    from PIL import Image

    twin = {k: res[k].clone() for k in ("depth", "normal", "mask")}
    timg8 = img8.copy()
    hurt = [j for j, p in enumerate(params) if undamaged(p) != p]
    if hurt:
        tr = render_views(
            [undamaged(params[j]) for j in hurt], views[hurt], lights[hurt], cfg.size, cfg.fov, cfg.supersample,
            None if cfg.backdrop == "white" else backs[hurt],
        )
        for q, j in enumerate(hurt):
            for k in twin:
                twin[k][j] = tr[k][q]
        timg8[hurt] = ((tr["image"].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    missing = (twin["mask"] > 0.5) & (res["mask"] < 0.5)
    region = ((res["damage"] > 0.5) | missing).float()
    region = F.max_pool2d(region, 3, 1, 1)
    # an undamaged sample has nothing to restore, also not at its outline
    region = region * torch.tensor([float(j in hurt) for j in range(len(idx))]).view(-1, 1, 1, 1)
    sl = slice(idx[0], idx[-1] + 1)
    arr["twin_images"][sl] = timg8
    arr["twin_depth"][sl] = twin["depth"][:, 0].numpy()
    arr["twin_normal"][sl] = twin["normal"].numpy().astype(np.float16)
    arr["twin_mask"][sl] = twin["mask"][:, 0].numpy().astype(np.uint8)
    rm = region[:, 0].numpy().astype(np.uint8)
    arr["restore_mask"][sl] = rm
    for j, i in enumerate(idx):
        Image.fromarray(timg8[j]).save(tmp / "twins" / f"{i:06d}.png", format="PNG")
        Image.fromarray(rm[j] * 255).save(tmp / "restore_masks" / f"{i:06d}.png", format="PNG")


def _write_sheets(root: Path, arr: dict[str, np.ndarray], cfg: SynthConfig) -> None:
    from digan.utils.images import from_uint8, make_grid, save_png

    k = min(cfg.n, 64)
    imgs = from_uint8(np.asarray(arr["images"][:k]))
    save_png(root / "contact_sheet.png", make_grid(imgs, nrow=8))
    m = min(cfg.n, 8)
    img = from_uint8(np.asarray(arr["images"][:m]))
    mask = torch.from_numpy(np.asarray(arr["mask"][:m])).float()[:, None]
    depth = torch.from_numpy(np.asarray(arr["depth"][:m]))[:, None]
    dvis = torch.where(mask > 0, ((1.07 - depth) / 0.14) * 2 - 1, torch.ones_like(depth)).clamp(-1, 1)
    normal = torch.from_numpy(np.asarray(arr["normal"][:m]).astype(np.float32))
    nvis = torch.where(mask > 0, normal, torch.ones_like(normal))
    dmg = torch.from_numpy(np.asarray(arr["damage"][:m])).float()[:, None] * 2 - 1
    ids = np.asarray(arr["identity"][:m])
    calb = torch.from_numpy(np.asarray(arr["canonical_albedo"][ids]).astype(np.float32))
    cd = torch.from_numpy(np.asarray(arr["canonical_depth"][ids]))[:, None]
    cdvis = (((1.07 - cd) / 0.14) * 2 - 1).clamp(-1, 1)
    rows = [img, dvis.expand(-1, 3, -1, -1), nvis, (mask * 2 - 1).expand(-1, 3, -1, -1), dmg.expand(-1, 3, -1, -1), calb, cdvis.expand(-1, 3, -1, -1)]
    save_png(root / "ground_truth_sheet.png", make_grid(torch.cat(rows), nrow=m))


# the loader lives in digan.data.synthetic; re-exported here for ``digan.data.synth.load_synth``
from digan.data.synthetic import SynthDataset, load_synth  # noqa: E402
