"""Identity similarity across poses (the DIGAN paper's protocol, written down precisely).

Protocol
--------
* **Faces**: ``n = ctx.n_faces`` faces (default 1,000; capped by a folder method's
  ``max_faces``), face ``i`` drawn from ``method.latents(., ctx.seed, i)``, so the set depends
  only on (seed, index) and splits across torchrun ranks (``ctx.shard``) without changing.
* **Views**: every face is rendered frontal (yaw 0, pitch 0) and at each (pitch, yaw) of
  ``ctx.pitches x ctx.yaws`` other than (0, 0); defaults yaw -45, -30, -15, 15, 30, 45 and pitch 0.
  For a method with a fixed set of yaws (a folder of renders) only the requested yaws it has are
  used (the others are listed in ``config.yaws_unavailable``).
* **Faces in images** (``align="detector"``, default): SCRFD (``ctx.models["detector"]``, default
  insightface ``buffalo_l/det_10g.onnx``) finds the largest, most central face of each rendered
  image (64-512 px images are padded and upsampled: :mod:`digan.faces.detector`); its 5
  keypoints align the face to the ArcFace 112 x 112 template by a similarity transform
  (insightface ``norm_crop``); an ArcFace-style ONNX model (``ctx.models["recognizer"]``,
  default ``buffalo_l/w600k_r50.onnx``, 512-d) embeds it; embeddings are L2-normalised.
  ``align="fixed"`` (explicit option only) skips detection and uses a fixed 5-point template
  for centred, aligned generator crops (:mod:`digan.faces.pipeline`); it is recorded in
  ``config.align``.
* **Score**: cosine similarity of each rotated view's embedding to the same face's frontal
  embedding. A face whose frontal view or rotated view has no detected face is **missed** for
  that view: counted in ``stats.missed`` (and ``missed_frontal`` / ``missed_view``), excluded
  from the mean, never silently dropped.
* **Records**: one per view, setting ``yaw=Y`` (or ``pitch=P,yaw=Y`` when a non-zero pitch is
  requested), ``value`` = mean cosine over the faces found in both views, ``stats`` = ``std``
  (sample std over faces), ``n``, ``missed``, ``missed_frontal``, ``missed_view``, ``median``,
  ``ci95`` (half-width of the normal 95% interval of the mean, 1.96 std / sqrt(n)); plus
  ``overall`` = mean over all (face, rotated view) pairs found, whose ``ci95`` is computed from
  the per-face means (views of one face are correlated) and whose ``missed`` counts excluded
  pairs. ``n_faces`` = faces attempted; ``config`` = yaws, pitches, image size fed to the
  detector, alignment, detector and recognizer file names, sha256 and settings.
* **How far the compared views turn** (``align="detector"``): the same keypoints give each view's
  yaw (:func:`digan.faces.pose.estimate_pose`, as the pose metric). ``stats.turn`` is how far
  the rotated view turned from the frontal one as a fraction of the asked yaw: per view the mean
  of (rotated yaw - frontal yaw) over the faces found in both, divided by the requested yaw;
  ``overall`` the least-squares slope through the origin of that difference against the
  requested yaw over all pairs. A render that hardly turns keeps its frontal identity for free,
  so the engine gives identity records whose ``turn`` is below ``RunConfig.min_turn`` (default
  0.5) status ``warn``: not a measure of identity *across poses*. Views with requested yaw 0
  (pitch only) and ``align="fixed"`` (no pose) carry no ``turn``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from digan.errors import DiganError
from evaluate.methods import Method
from evaluate.metrics.base import EvalContext, Metric, register_metric
from evaluate.records import Record

__all__ = ["IdentityAcrossPoses", "ViewResults", "analyze_views", "face_views", "setting_name", "summary_stats",
           "view_turn"]


def _fmt(v: float) -> str:
    return f"{float(v):g}"


def setting_name(pitch: float, yaw: float, with_pitch: bool) -> str:
    """``yaw=-45`` or ``pitch=10,yaw=-45`` (the records' setting string)."""
    return f"pitch={_fmt(pitch)},yaw={_fmt(yaw)}" if with_pitch else f"yaw={_fmt(yaw)}"


def face_views(method: Method, ctx: EvalContext, include_frontal: bool) -> tuple[list[tuple[float, float]], list[float]]:
    """The (pitch, yaw) views to render and the requested yaws a fixed-yaw method cannot render.

    ``include_frontal=True`` (identity): the frontal reference (0, 0) first, then
    ``ctx.pitches x ctx.yaws``. ``False`` (pose): ``ctx.pitches x ({0} + ctx.yaws)``.
    """
    caps = method.capabilities
    yaws = [float(y) for y in ctx.yaws]
    if not include_frontal:
        yaws = [0.0] + [y for y in yaws if y != 0.0]
    unavailable: list[float] = []
    if caps.yaws is not None:
        have = {round(float(y), 6) for y in caps.yaws}
        unavailable = [y for y in yaws if round(y, 6) not in have]
        yaws = [y for y in yaws if round(y, 6) in have]
    views: list[tuple[float, float]] = [(0.0, 0.0)] if include_frontal else []
    for p in ctx.pitches:
        for y in yaws:
            v = (float(p), float(y))
            if v not in views:
                views.append(v)
    return views, unavailable


def n_faces_for(method: Method, ctx: EvalContext) -> int:
    n = int(ctx.n_faces)
    cap = method.capabilities.max_faces
    return min(n, int(cap)) if cap else n


@dataclass
class ViewResults:
    """Per face (rows, global order) and view (columns): detection, embedding, pose."""

    views: list[tuple[float, float]]
    found: np.ndarray  # (N, V) bool
    embedding: np.ndarray | None  # (N, V, D)
    yaw: np.ndarray  # (N, V) estimated degrees (NaN when missed)
    pitch: np.ndarray
    image_size: int


def analyze_views(
    method: Method,
    ctx: EvalContext,
    pipeline,
    views: list[tuple[float, float]],
    n: int,
    *,
    embed: bool,
    pose: bool,
    batch_size: int | None = None,
) -> ViewResults:
    """Render faces ``0..n-1`` of ``ctx.seed`` at every view and analyse them with ``pipeline``
    (:class:`digan.faces.pipeline.FacePipeline`); this rank's share only, gathered at the end."""
    idx = ctx.shard(n)
    local = len(idx)
    nv = len(views)
    bs = max(1, int(batch_size or ctx.batch_size))
    dim = pipeline.recognizer.dim if (embed and pipeline.recognizer is not None) else 0
    found = np.zeros((local, nv), dtype=bool)
    emb = np.full((local, nv, dim), np.nan, dtype=np.float32) if embed else None
    yaw = np.full((local, nv), np.nan)
    pitch = np.full((local, nv), np.nan)
    size = 0
    for s in range(0, local, bs):
        k = min(bs, local - s)
        z = method.latents(k, ctx.seed, idx.start + s)
        imgs = []
        for p, y in views:
            with torch.no_grad():
                img = method.render(z, yaw=y, pitch=p).image
            if img.ndim != 4 or img.shape[0] != k or img.shape[1] != 3:
                raise DiganError(f"method {method.name} returned images of shape {tuple(img.shape)} for {k} faces; expected {k} x 3 x H x W")
            size = int(img.shape[-1])
            imgs.append(img.detach().to("cpu", torch.float32))
            ctx.advance(k)
        # all views of this batch in one pass through the detector and recognizer
        a = pipeline.analyze(torch.cat(imgs, 0), embed=embed, pose=pose)
        found[s : s + k] = a.found.reshape(nv, k).T
        if embed:
            emb[s : s + k] = a.embedding.reshape(nv, k, -1).transpose(1, 0, 2)
        yaw[s : s + k] = a.yaw.reshape(nv, k).T
        pitch[s : s + k] = a.pitch.reshape(nv, k).T
    g_found = ctx.gather(torch.from_numpy(found)).numpy().astype(bool)
    g_emb = ctx.gather(torch.from_numpy(emb)).numpy() if embed else None
    g_yaw = ctx.gather(torch.from_numpy(yaw)).numpy()
    g_pitch = ctx.gather(torch.from_numpy(pitch)).numpy()
    sizes = ctx.gather(torch.tensor([size]))
    return ViewResults(views=views, found=g_found, embedding=g_emb, yaw=g_yaw, pitch=g_pitch, image_size=int(sizes.max()))


def view_turn(frontal_yaw, view_yaw, requested_yaw, ok) -> float | None:
    """How far rotated views turned from their frontal views as a fraction of the requested yaw:
    the least-squares slope through the origin of (view yaw - frontal yaw) against the requested
    yaw over the pairs where ``ok`` and both estimates are finite and the requested yaw is not 0
    (for one requested yaw, the mean turn divided by it). None when no such pair exists."""
    f = np.asarray(frontal_yaw, dtype=np.float64)
    v = np.asarray(view_yaw, dtype=np.float64)
    r = np.asarray(requested_yaw, dtype=np.float64)
    m = np.asarray(ok, dtype=bool) & np.isfinite(f) & np.isfinite(v) & (r != 0)
    if not m.any():
        return None
    d, r = v[m] - f[m], r[m]
    return float((r * d).sum() / (r * r).sum())


def summary_stats(x: np.ndarray) -> dict[str, float]:
    """``std`` (ddof 1), ``n``, ``median``, ``ci95`` (1.96 std / sqrt n) of finite values."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = int(x.size)
    std = float(x.std(ddof=1)) if n > 1 else 0.0
    return {
        "std": std,
        "n": n,
        "median": float(np.median(x)) if n else float("nan"),
        "ci95": 1.96 * std / math.sqrt(n) if n > 1 else float("nan"),
    }


_MODEL_CACHE: dict[tuple, Any] = {}


def _cached(kind: str, path: str | None, device: str):
    """One detector / recognizer per (file, size, mtime, device) and process: the identity and pose
    metrics of several methods share the onnxruntime sessions (``run`` is thread-safe)."""
    import os

    from digan.faces.detector import FaceDetector
    from digan.faces.onnx_models import resolve_model
    from digan.faces.recognizer import FaceRecognizer

    f = resolve_model(kind, path, flag=f"--model {kind}=PATH")
    st = os.stat(f)
    key = (kind, str(f.resolve()), st.st_size, st.st_mtime_ns, device)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = FaceDetector(f, device=device) if kind == "detector" else FaceRecognizer(f, device=device)
    return _MODEL_CACHE[key]


def check_face_models(ctx: EvalContext, roles: tuple[str, ...]) -> list[str]:
    """One line per face model file of ``roles`` that cannot be found (``Metric.check_inputs``);
    the same text for identity and pose, so a run with both lists a missing detector once."""
    from digan.faces.onnx_models import resolve_model

    out = []
    for role in roles:
        try:
            resolve_model(role, ctx.models.get(role) or None, flag=f"--model {role}=PATH")
        except DiganError as e:
            out.append(str(e))
    return out


def make_pipeline(ctx: EvalContext, align: str = "detector", fixed_kps=None, recognizer: bool = True):
    """The face pipeline of a metric run: model files from ``ctx.models`` (defaults otherwise),
    onnxruntime on CUDA when ``ctx.device`` is a GPU and onnxruntime has the CUDA provider."""
    from digan.faces.pipeline import FacePipeline

    # keep the GPU index: under torchrun every rank runs onnxruntime on its own GPU
    dev = str(ctx.device) if str(ctx.device).startswith("cuda") else "cpu"
    det = _cached("detector", ctx.models.get("detector") or None, dev) if align == "detector" else None
    rec = _cached("recognizer", ctx.models.get("recognizer") or None, dev) if recognizer else False
    return FacePipeline(detector=det, recognizer=rec, align=align, fixed_kps=fixed_kps, device=dev)


@register_metric
class IdentityAcrossPoses(Metric):
    """Identity similarity across poses: ArcFace cosine of each rotated view to its frontal view.

    See the module docstring for the exact protocol. Options: ``align`` ("detector" or
    "fixed"), ``fixed_kps`` (5 x 2 template in units of the image side for ``align="fixed"``),
    ``batch_size`` (faces rendered per call; default ``ctx.batch_size``).
    """

    name = "identity"
    unit = "cos"
    higher_is_better = True
    requires = ("pose",)

    def __init__(self, align: str = "detector", fixed_kps: list | None = None, batch_size: int | None = None):
        from digan.faces.pipeline import ALIGN_MODES

        if align not in ALIGN_MODES:
            raise DiganError(f"identity: unknown align {align!r}; choose one of {', '.join(ALIGN_MODES)}")
        self.align = align
        self.fixed_kps = fixed_kps
        self.batch_size = batch_size

    def applicable(self, method: Method, ctx: EvalContext) -> str | None:
        reason = super().applicable(method, ctx)
        if reason is not None:
            return reason
        views, _ = face_views(method, ctx, include_frontal=True)
        caps = method.capabilities
        if caps.yaws is not None and 0.0 not in {float(y) for y in caps.yaws}:
            return "the method has no frontal (yaw 0) renders to compare with"
        if len(views) < 2:
            return "none of the requested yaws is available from this method"
        return None

    def check_inputs(self, ctx: EvalContext) -> list[str]:
        return check_face_models(ctx, ("detector", "recognizer") if self.align == "detector" else ("recognizer",))

    def work_units(self, method: Method, ctx: EvalContext) -> int:
        views, _ = face_views(method, ctx, include_frontal=True)
        return n_faces_for(method, ctx) * len(views)

    def config(self, ctx: EvalContext) -> dict[str, Any]:
        return {
            "n_faces": ctx.n_faces,
            "seed": ctx.seed,
            "yaws": [float(y) for y in ctx.yaws],
            "pitches": [float(p) for p in ctx.pitches],
            "align": self.align,
            "fixed_kps": self.fixed_kps,
            "detector": ctx.models.get("detector") or "det_10g.onnx (default)",
            "recognizer": ctx.models.get("recognizer") or "w600k_r50.onnx (default)",
            "reference_view": "pitch=0,yaw=0",
            "similarity": "cosine of L2-normalised ArcFace embeddings of 112x112 5-point aligned crops",
            "turn": "landmark yaw of the rotated view minus the frontal view's, over the requested yaw"
            if self.align == "detector" else "not measured (align=fixed)",
        }

    def compute(self, method: Method, ctx: EvalContext) -> list[Record]:
        pipeline = make_pipeline(ctx, self.align, self.fixed_kps, recognizer=True)
        views, unavailable = face_views(method, ctx, include_frontal=True)
        n = n_faces_for(method, ctx)
        res = analyze_views(method, ctx, pipeline, views, n, embed=True, pose=self.align == "detector",
                            batch_size=self.batch_size)
        return identity_records(res, pipeline, self.config(ctx), ctx, n, unavailable, method)


def identity_records(res: ViewResults, pipeline, base_config: dict, ctx: EvalContext, n: int, unavailable: list[float], method: Method) -> list[Record]:
    """Records of the identity metric from per-face, per-view results (see the module docstring)."""
    with_pitch = any(float(p) != 0.0 for p in ctx.pitches)
    front = res.found[:, 0]
    e0 = res.embedding[:, 0]
    config = {
        **base_config,
        "pipeline": pipeline.info(),
        "image_size": res.image_size,
        "n_faces_used": n,
        "yaws_unavailable": unavailable,
        "frontal_detected": int(front.sum()),
    }
    records: list[Record] = []
    sims = np.full((len(front), len(res.views) - 1), np.nan)
    for j, (p, y) in enumerate(res.views[1:], start=1):
        ok = front & res.found[:, j]
        s = np.full(len(front), np.nan)
        if ok.any():
            s[ok] = np.einsum("nd,nd->n", e0[ok].astype(np.float64), res.embedding[ok, j].astype(np.float64))
        sims[:, j - 1] = s
        st = summary_stats(s)
        stats = {
            **st,
            "missed": int((~ok).sum()),
            "missed_frontal": int((~front).sum()),
            "missed_view": int((~res.found[:, j]).sum()),
        }
        turn = view_turn(res.yaw[:, 0], res.yaw[:, j], [y] * len(front), ok)
        if turn is not None:
            stats["turn"] = turn
        common = dict(
            method=method.name, metric="identity", setting=setting_name(p, y, with_pitch), unit="cos",
            higher_is_better=True, stats=stats, variant=method.variant, n_faces=n,
            seeds={"latents": ctx.seed}, config=config, weights=pipeline.weights(),
        )
        if st["n"] == 0:
            # a finding about the method (its renders are not detected as faces), not a failure of
            # the measurement: n/a with the detection counts, so a run of such a method completes
            records.append(Record(**common, status="n/a", reason=(
                f"no face pair detected at pitch {p:g}, yaw {y:g} ({stats['missed_frontal']} frontal and "
                f"{stats['missed_view']} rotated views missed, detection rate 0%): the renders are not "
                f"recognisable faces (check them) or use align=fixed")))
        else:
            records.append(Record(**common, value=float(np.nanmean(s))))
    flat = sims[np.isfinite(sims)]
    if flat.size == 0:
        raise DiganError(
            f"the face detector found no face pairs in {n} faces x {len(res.views)} views "
            f"({int((~front).sum())} frontal views missed); check the renders or set the identity option align=fixed"
        )
    per_face = np.array([np.nanmean(r) for r in sims if np.isfinite(r).any()])
    st = summary_stats(flat)
    overall_stats = {
        "std": st["std"],
        "n": st["n"],
        "median": st["median"],
        "ci95": 1.96 * float(per_face.std(ddof=1)) / math.sqrt(len(per_face)) if len(per_face) > 1 else float("nan"),
        "n_faces_with_pair": int(len(per_face)),
        "missed": int(sims.size - flat.size),
        "missed_frontal": int((~front).sum()),
        "pairs": int(sims.size),
    }
    nv = len(res.views) - 1
    pair_ok = (front[:, None] & res.found[:, 1:]).reshape(-1)
    turn = view_turn(np.repeat(res.yaw[:, 0], nv), res.yaw[:, 1:].reshape(-1),
                     [y for _ in range(len(front)) for (_, y) in res.views[1:]], pair_ok)
    if turn is not None:
        overall_stats["turn"] = turn
    records.append(Record(
        method=method.name, metric="identity", setting="overall", value=float(flat.mean()), unit="cos",
        higher_is_better=True, stats=overall_stats, variant=method.variant, n_faces=n,
        seeds={"latents": ctx.seed}, config=config, weights=pipeline.weights(),
    ))
    return records
