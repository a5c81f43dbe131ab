"""Pose accuracy: does the face turn by the requested angle? Catches methods that ignore the
pose command.

Protocol
--------
* **Faces and views**: as the identity metric (:mod:`evaluate.metrics.identity`): faces
  ``0..n-1`` of ``ctx.seed`` (``n = ctx.n_faces``, default 1,000), rendered at every (pitch, yaw)
  of ``ctx.pitches x ({0} + ctx.yaws)`` (the frontal view is scored too).
* **Estimated pose**: SCRFD (``ctx.models["detector"]``) finds the largest, most central face;
  yaw, pitch and roll are fitted to its 5 keypoints by a weak-perspective fit of a 3D 5-point
  mean face (:func:`digan.faces.pose.estimate_pose`; the renderer's sign convention: positive
  yaw moves the nose toward image +x, positive pitch toward image +y). Faces the detector
  misses are counted (``stats.missed``) and excluded.
* **Records**: per view (setting ``yaw=Y``, or ``pitch=P,yaw=Y`` when a non-zero pitch is
  requested): ``value`` = mean absolute error |estimated yaw - requested yaw| in degrees;
  ``stats`` = ``std`` (of the absolute error), ``n``, ``missed``, ``median`` (absolute error),
  ``ci95``, ``mean_signed`` (mean estimated - requested: a bias or a too small/large turn),
  ``est_mean`` / ``est_std`` (estimated yaw), and with requested pitches ``pitch_mae``,
  ``pitch_mean_signed``. ``overall``: MAE over all (face, view) pairs found, plus ``slope`` and
  ``intercept`` of the least-squares line estimated = slope x requested + intercept and the
  correlation ``corr`` (a method that ignores the pose command has slope ~0 and an MAE near the
  mean |requested yaw|).

What the numbers include: the landmark estimator's own error (a few degrees on real photos of
frontal faces, see :mod:`digan.faces.pose`) and any mismatch between the rendered head's shape
and the mean face template (a head whose nose sticks out less reads as turning less). Compare
methods under the same protocol; do not read an MAE of 3 degrees as a rendering error.
``align="fixed"`` cannot measure pose (the keypoints would not move): the metric needs the
detector.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from digan.errors import DiganError
from evaluate.methods import Method
from evaluate.metrics.base import EvalContext, Metric, register_metric
from evaluate.metrics.identity import (analyze_views, check_face_models, face_views, make_pipeline, n_faces_for,
                                       setting_name, summary_stats)
from evaluate.records import Record

__all__ = ["PoseAccuracy", "pose_records"]


@register_metric
class PoseAccuracy(Metric):
    """Pose accuracy: mean absolute error of the landmark-estimated yaw vs the requested yaw.

    See the module docstring for the exact protocol. Option ``batch_size``: faces rendered per
    call (default ``ctx.batch_size``).
    """

    name = "pose"
    unit = "deg"
    higher_is_better = False
    requires = ("pose",)

    def __init__(self, batch_size: int | None = None):
        self.batch_size = batch_size

    def applicable(self, method: Method, ctx: EvalContext) -> str | None:
        reason = super().applicable(method, ctx)
        if reason is not None:
            return reason
        views, _ = face_views(method, ctx, include_frontal=False)
        if not views:
            return "none of the requested yaws is available from this method"
        return None

    def check_inputs(self, ctx: EvalContext) -> list[str]:
        return check_face_models(ctx, ("detector",))

    def work_units(self, method: Method, ctx: EvalContext) -> int:
        views, _ = face_views(method, ctx, include_frontal=False)
        return n_faces_for(method, ctx) * len(views)

    def config(self, ctx: EvalContext) -> dict[str, Any]:
        return {
            "n_faces": ctx.n_faces,
            "seed": ctx.seed,
            "yaws": [0.0] + [float(y) for y in ctx.yaws if float(y) != 0.0],
            "pitches": [float(p) for p in ctx.pitches],
            "detector": ctx.models.get("detector") or "det_10g.onnx (default)",
            "estimator": "weak-perspective fit of the 5-point 3D mean face (digan.faces.pose)",
        }

    def compute(self, method: Method, ctx: EvalContext) -> list[Record]:
        pipeline = make_pipeline(ctx, "detector", recognizer=False)
        views, unavailable = face_views(method, ctx, include_frontal=False)
        n = n_faces_for(method, ctx)
        res = analyze_views(method, ctx, pipeline, views, n, embed=False, pose=True, batch_size=self.batch_size)
        config = {**self.config(ctx), "pipeline": pipeline.info(), "image_size": res.image_size,
                  "n_faces_used": n, "yaws_unavailable": unavailable}
        return pose_records(res, config, ctx, n, method, pipeline.weights())


def pose_records(res, config: dict, ctx: EvalContext, n: int, method: Method, weights: dict) -> list[Record]:
    """Records of the pose metric from per-face, per-view results (see the module docstring)."""
    with_pitch = any(float(p) != 0.0 for p in ctx.pitches)
    req_yaw = np.array([y for _, y in res.views], dtype=np.float64)[None, :].repeat(len(res.found), 0)
    req_pitch = np.array([p for p, _ in res.views], dtype=np.float64)[None, :].repeat(len(res.found), 0)
    err = res.yaw - req_yaw
    perr = res.pitch - req_pitch
    records: list[Record] = []
    for j, (p, y) in enumerate(res.views):
        ok = res.found[:, j]
        e = err[ok, j]
        st = summary_stats(np.abs(e))
        stats: dict[str, Any] = {
            **st,
            "missed": int((~ok).sum()),
            "mean_signed": float(e.mean()) if e.size else float("nan"),
            "est_mean": float(res.yaw[ok, j].mean()) if e.size else float("nan"),
            "est_std": float(res.yaw[ok, j].std(ddof=1)) if e.size > 1 else float("nan"),
        }
        if with_pitch:
            pe = perr[ok, j]
            stats["pitch_mae"] = float(np.abs(pe).mean()) if pe.size else float("nan")
            stats["pitch_mean_signed"] = float(pe.mean()) if pe.size else float("nan")
        common = dict(
            method=method.name, metric="pose", setting=setting_name(p, y, with_pitch), unit="deg",
            higher_is_better=False, stats=stats, variant=method.variant, n_faces=n,
            seeds={"latents": ctx.seed}, config=config, weights=weights,
        )
        if e.size == 0:
            # the method's renders are not detected as faces: a finding, not a failed measurement
            records.append(Record(**common, status="n/a", reason=(
                f"the face detector found no face in any of the {n} renders at pitch {p:g}, yaw {y:g} "
                f"(detection rate 0%); check the renders")))
        else:
            records.append(Record(**common, value=float(np.abs(e).mean())))
    ok = res.found
    if not ok.any():
        raise DiganError(f"the face detector found no face in {n} faces x {len(res.views)} views; pose cannot be estimated")
    e = err[ok]
    st = summary_stats(np.abs(e))
    x, yv = req_yaw[ok], res.yaw[ok]
    stats = {**st, "missed": int((~ok).sum()), "mean_signed": float(e.mean())}
    # per-face clustering for the interval: mean absolute error per face
    per_face = np.array([np.abs(err[i, ok[i]]).mean() for i in range(len(ok)) if ok[i].any()])
    stats["ci95"] = 1.96 * float(per_face.std(ddof=1)) / math.sqrt(len(per_face)) if len(per_face) > 1 else float("nan")
    if np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, yv, 1)
        stats["slope"], stats["intercept"] = float(slope), float(intercept)
        stats["corr"] = float(np.corrcoef(x, yv)[0, 1]) if np.std(yv) > 0 else 0.0
    if with_pitch:
        stats["pitch_mae"] = float(np.abs(perr[ok]).mean())
        stats["pitch_mean_signed"] = float(perr[ok].mean())
    records.append(Record(
        method=method.name, metric="pose", setting="overall", value=float(np.abs(e).mean()), unit="deg",
        higher_is_better=False, stats=stats, variant=method.variant, n_faces=n,
        seeds={"latents": ctx.seed}, config=config, weights=weights,
    ))
    return records
