"""Shape diagnostics of a trained student on synthetic heads with known 3D (``digan-bench bench shape``).

SIDE/MAD alone do not say *why* a student fails to recover shape. This report separates the
usual failure modes of 3D lifting on a set made by ``digan-bench data synth``:

* **pose**: each image is reconstructed as the ``digan`` method's ``reconstruct`` does
  (:meth:`Student.reconstruct`: inverted into the teacher, with ``model.flip_average`` its mirror
  image too and the two estimates averaged) and DV's yaw is compared with the true yaw: Pearson
  correlation and least-squares slope
  (1 is perfect; near 0: the pose stays in the texture; negative: the hollow-face solution,
  where a concave face turned the other way explains the image);
* **neutral code**: asymmetry ``mean |G(w0) - mirror(G(w0))|`` of the canonical face next to
  that of the teacher's own images (a canonical face as asymmetric as the input is not frontal);
* **light**: mean ambient and diffuse strength and the spread of the light direction (a
  collapsed diffuse term means shading carries no shape information);
* **relief**: masked standard deviation of the canonical depth (scene units);
* **3D error**: SIDE and MAD (Unsup3d protocol, :mod:`evaluate.metrics.depth3d`) of the
  reconstructions, with four references on the same images and the same pixels (the student's
  render inside the ground-truth mask): a flat plane, the model's own depth prior alone
  (``model.depth_prior``, frontal), the prior turned to DV's predicted view (what the pose alone
  gives: the learnt depth must beat *this* to have added shape), and the reconstruction with its
  relief inverted about its mean (lower than the reconstruction = hollow faces), and "one head":
  every face given the student's own depth of the teacher's mean code at DV's pose (a student
  that scores no better than this has learnt one head shape, not each face's); and the student
  beside the posed prior and the one head on the inner face only (the prior's ellipse carried to the view: no
  neck, hair or shoulders), where nose, brow and chin are;
* **inversion or depth**: PSNR inside the ground-truth mask, per face and mean, of the teacher's
  image of the inverted w against the input (low: the teacher cannot reproduce the face, so the
  3D error is the inversion's) and of the student's render (low while the teacher's is high: the
  student's depth, albedo or view explain the image badly);
* **roughness**: mean ``|Laplacian|`` of the reconstructed depth
  (:func:`evaluate.metrics.depth3d.depth_roughness`) beside the ground truth's and the prior's on
  the same pixels; a ratio far above 1 is shredded or rippled depth that SIDE/MAD average out;
* **pose or shape**: SIDE/MAD of the same estimate rendered at the true rotation (DV's
  translation kept, scored on that render's pixels): the part of the error a perfect pose would
  remove; what is left is the depth's; DV's pitch against the true pitch (as for the yaw); and
  DV's sideways shift against its own yaw (:func:`shift_agreement`: the heads' crops do not
  shift with the turn, so a shift that follows DV's yaw is the view making up for the shape);
* **how good one head could be** (ground truth, not a method; when the set has its heads'
  canonical depths): each face's own true canonical depth at DV's pose (a perfect shape with the
  student's pose: the floor of the rest of the pipeline), and the mean true canonical depth of
  the *other* evaluated heads at DV's pose (the best one shared head: a student at "one head"
  that is far above it has learnt a poor head, not merely no per-face shape), both on the
  student's pixels;
* **teacher or student**: :func:`teacher_relighting`: the same heads lit from the left and the
  right, inverted into the teacher; how much of each log-ratio image the true normals, the
  convex prior's and the student's own explain (shading can teach the depth only the form the
  teacher's images carry, and the student should explain at least what the prior does).

The inversion and scoring pass (:func:`reconstruction_report`) is shared with the evaluation during
training (:class:`TrainingShapeEval`, ``digan-bench train --eval-data``). All numbers come from
fixed seeds; the report is a JSON-ready dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from digan.errors import DiganError
from digan.student.inference import Student

if TYPE_CHECKING:
    from digan.faces.detector import FaceDetector

__all__ = ["pose_agreement", "corr_interval", "shift_agreement", "light_agreement", "yaw_moment", "compose_rotation_gain", "code_spread", "GAIN_YAWS", "landmark_yaw_check", "inversion_pose_ceiling", "neutral_code_spread", "yaw_kept", "masked_std", "masked_psnr", "load_eval_faces", "reconstruction_report", "shape_diagnostics", "shape_report_lines",
           "relighting_fit", "teacher_relighting", "RELIGHT_AMBIENT_DIFFUSE", "RELIGHT_RATIOS", "RELIGHT_DIRECTIONS",
           "SHAPE_EVAL_JSONL", "SHAPE_EVAL_CSV", "SHAPE_EVAL_COLUMNS", "shape_eval_row", "read_shape_eval", "TrainingShapeEval"]


def pose_agreement(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """``{"corr", "slope"}``: Pearson correlation and least-squares slope of ``pred`` on ``true``."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape or pred.size < 3:
        raise DiganError("pose agreement needs at least 3 paired angles")
    tc, pc = true - true.mean(), pred - pred.mean()
    denom = float(np.sqrt((tc**2).sum() * (pc**2).sum()))
    corr = float((tc * pc).sum() / denom) if denom > 0 else float("nan")
    slope = float((tc * pc).sum() / (tc**2).sum()) if (tc**2).sum() > 0 else float("nan")
    return {"corr": corr, "slope": slope}


def corr_interval(r: float, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """The approximate ``level`` confidence interval of a Pearson correlation ``r`` over ``n``
    pairs (Fisher's z: atanh(r) +- z_q / sqrt(n - 3)); None when n < 4 or r is not in (-1, 1).
    How far a correlation from a few dozen faces may move with another draw of faces: at r
    0.97 over 48 faces the 95 % interval is about 0.95-0.98."""
    from statistics import NormalDist

    if n < 4 or not np.isfinite(r) or abs(r) >= 1:
        return None
    h = NormalDist().inv_cdf(0.5 + level / 2) / np.sqrt(n - 3)
    z = float(np.arctanh(r))
    return float(np.tanh(z - h)), float(np.tanh(z + h))


def shift_agreement(pred_tx: np.ndarray, pred_yaw: np.ndarray, true_tx: np.ndarray | None = None) -> dict[str, float]:
    """DV's sideways shift against its own yaw: ``per_10deg`` (least-squares slope of the x
    translation on the yaw, per 10 degrees), ``corr_yaw``, ``pred_std`` and, with the true x
    translations, ``true_std`` and ``corr_true``. The synthetic heads' crops do not shift with
    the yaw (their tx is uniform and independent of it), so a shift that follows the yaw is the
    view making up for a face whose features sweep too little on a turn (docs/shape-history.md,
    "sideways shift"): it places even the true shape off the head."""
    tx = np.asarray(pred_tx, dtype=np.float64)
    a = pose_agreement(tx, np.asarray(pred_yaw, dtype=np.float64))
    out = {"per_10deg": a["slope"] * 10, "corr_yaw": a["corr"], "pred_std": float(tx.std())}
    if true_tx is not None:
        t = np.asarray(true_tx, dtype=np.float64)
        out["true_std"] = float(t.std())
        out["corr_true"] = pose_agreement(tx, t)["corr"]  # NaN when either spread is 0
    return out


def light_agreement(pred: Any, true: torch.Tensor) -> dict[str, float]:
    """DL's light against the true light (B,4: ambient, diffuse, dx, dy) of the same images:
    ``dx_corr``/``dy_corr``/``dx_slope``/``dy_slope`` (:func:`pose_agreement` of each direction
    component), the predicted and true means of ambient and diffuse, and the spread (std) of the
    predicted and true directions. A DL that lights every face the same way (direction std near
    0, correlation NaN or near 0) gives the depth no shading signal: shape is then lost there."""
    t = true.detach().cpu().double().numpy()
    pa = pred.ambient.detach().cpu().double().numpy()
    pdf = pred.diffuse.detach().cpu().double().numpy()
    pdir = pred.direction.detach().cpu().double().numpy()
    out: dict[str, float] = {}
    for j, name in ((0, "dx"), (1, "dy")):
        try:
            a = pose_agreement(pdir[:, j], t[:, 2 + j])
        except DiganError:
            a = {"corr": float("nan"), "slope": float("nan")}
        out[f"{name}_corr"], out[f"{name}_slope"] = a["corr"], a["slope"]
    out.update({"ambient_pred": float(pa.mean()), "ambient_true": float(t[:, 0].mean()),
                "diffuse_pred": float(pdf.mean()), "diffuse_true": float(t[:, 1].mean()),
                "direction_std_pred": float(pdir.std(0).mean()), "direction_std_true": float(t[:, 2:4].std(0).mean())})
    return out


def yaw_moment(images: torch.Tensor) -> np.ndarray:
    """Per image (B,3,H,W): ``mean(x * (grey - mirror(grey)))`` with x in [-1, 1] across the
    image, a teacher-free signature of a turned head (its sign follows the yaw; on the synthetic
    heads it grows linearly with the true yaw, correlation ~0.65 per image)."""
    g = images.detach().float().mean(1, keepdim=True).cpu()
    x = torch.linspace(-1, 1, g.shape[-1]).view(1, 1, 1, -1)
    return ((g - g.flip(3)) * x).mean((1, 2, 3)).double().numpy()


#: requested yaws (degrees) of :func:`compose_rotation_gain`
GAIN_YAWS = (-30.0, -15.0, 0.0, 15.0, 30.0)


def code_spread(student: Student, w: torch.Tensor, n_ref: int = 1024, seed: int = 0) -> dict[str, float]:
    """How far the codes ``w`` (B,D) spread compared with the codes DV was trained on: the rms of
    DV's standardised input for ``w`` (``inverted``) and for ``n_ref`` teacher samples at the
    training truncation (``trained``; seeded), and their ``ratio``. A ratio well above 1 means
    DV reads these codes outside the region it was trained on. On the bundle DV's yaw slope
    falls as inversions run longer and their codes spread further (0.86x / 1.12x / 1.47x after
    15 / 30 / 60 steps: slope 0.92 / 0.85 / 0.74), but training on untruncated codes (ratio ~1)
    did not raise it (docs/shape-history.md): the line says where DV reads, not why it reads less."""
    vn = student.g3d.view_net
    ref = student.style(student.latents(int(n_ref), seed=int(seed)))
    with torch.no_grad():
        a = float(vn.standardise(w.to(student.device)).pow(2).mean().sqrt())
        b = float(vn.standardise(ref).pow(2).mean().sqrt())
    return {"inverted": a, "trained": b, "ratio": a / b if b > 0 else float("nan"),
            "truncation": float(student.cfg.model.truncation)}


def neutral_code_spread(w: torch.Tensor, w0: torch.Tensor) -> dict[str, float]:
    """Does the neutral code ``w0 = M(w, L0, 0)`` (B,D) keep each face's identity? ``ratio``: the
    mean per-dimension std of ``w0`` over the faces against that of ``w`` (1 = as varied; a
    collapsed M, which sends every code near one face, scores near 0); ``own``: the fraction of
    faces whose ``w0`` lies nearer their own ``w`` than any other face's (1/B by chance).
    ``G(w0)`` is the texture every render shows, so a low ratio means one face for all: over
    ``bench shape``'s 64 samples the bundled DIGAN scores 0.99 / 1.00, the LiftGAN bundled in the
    nineteenth session 0.23 / 1 of 64 (docs/shape-history.md, "The LiftGAN student's one face")."""
    w, w0 = w.detach().double().cpu(), w0.detach().double().cpu()
    if w.ndim != 2 or w.shape != w0.shape or w.shape[0] < 2:
        raise DiganError(f"neutral_code_spread needs two (B, D) batches of the same shape, B >= 2; got {tuple(w.shape)} and {tuple(w0.shape)}")
    sw = float(w.std(0).mean())
    ratio = float(w0.std(0).mean()) / sw if sw > 0 else float("nan")
    own = float((torch.cdist(w0, w).argmin(1) == torch.arange(w.shape[0])).double().mean())
    return {"ratio": ratio, "own": own, "n": int(w.shape[0])}


def compose_rotation_gain(student: Student, w: torch.Tensor, light_raw: torch.Tensor, images: torch.Tensor,
                          true_yaw: np.ndarray) -> dict[str, float]:
    """How far the compose net M really turns a face when asked to: the perturbation loss
    compares renders at a sampled view V' with the teacher's image G(M(w, L, V')), so a teacher
    image that turns less than V' (while DV reads more) pulls the learnt depth flatter.

    For each requested yaw in :data:`GAIN_YAWS` (pitch and roll 0): ``image`` = least-squares
    slope of :func:`yaw_moment` of G(M(w, L, V')) on the requested yaw, divided by that of the
    ground-truth ``images`` on their ``true_yaw`` (1 = the teacher's image turns as a real head
    by V'); ``dv`` = slope of DV(M(w, L, V')) yaw on the requested yaw (the cycle loss wants 1);
    ``calibration_corr`` = correlation of the ground truth's moments with the true yaw (below
    0.3 the calibration is too noisy and ``image`` is NaN)."""
    g = student.g3d
    cal = pose_agreement(yaw_moment(images), true_yaw)
    ys, ms, dv = [], [], []
    with torch.no_grad():
        for yv in GAIN_YAWS:
            vp = torch.zeros(w.shape[0], 6, device=w.device, dtype=w.dtype)
            vp[:, 1] = yv / g.cfg.model.rotation_range
            wp = g.compose(w, light_raw, vp)
            vr, _ = g.decompose(wp)
            ys += [yv] * w.shape[0]
            ms.append(yaw_moment(student.teacher_image(wp)))
            dv.append(g.view_net.to_view(vr).rotation[:, 1].detach().cpu().double().numpy())
    ys_a = np.asarray(ys)
    img = pose_agreement(np.concatenate(ms), ys_a)["slope"]
    ok = np.isfinite(cal["corr"]) and cal["corr"] >= 0.3 and cal["slope"] > 0
    return {"image": float(img / cal["slope"]) if ok else float("nan"), "dv": pose_agreement(np.concatenate(dv), ys_a)["slope"],
            "calibration_corr": float(cal["corr"])}


def _residual(y: np.ndarray, true: np.ndarray) -> np.ndarray:
    """``y`` minus its least-squares line on ``true`` (what the angle gets wrong beyond a scale)."""
    a, b = np.polyfit(true, y, 1)
    return y - (a * true + b)


def landmark_yaw_check(photos: torch.Tensor, teacher_images: torch.Tensor, dv_yaw: np.ndarray, true_yaw: np.ndarray,
                       detector: str | Path | FaceDetector) -> dict[str, Any]:
    """Where DV's yaw error comes from, read by a face detector independent of the student
    (:mod:`digan.faces.pose`: the head pose of its 5 keypoints). The detector reads the yaw of
    each ``photo`` and of the teacher's image of the photo's inverted code (``teacher_images``);
    both are scored against ``true_yaw`` (``photo``, ``teacher_image``: ``corr``, ``slope``; on
    the ``found`` faces read on both), and DV's residual (its yaw minus its line on the true yaw) is correlated with
    each of theirs (``dv_follows``). A DV that follows the teacher's image and not the photo reads
    what the inversion shows: its error is the inversion's, and no calibration of DV against the
    photos can remove it (docs/shape-history.md: "Where DV's yaw is lost"). Faces the detector misses
    on either image are left out; with fewer than 3 (or under half the faces) left, the numbers
    are NaN and ``too_few`` is True (flagged, not reported as a result). ``kept``
    (:func:`yaw_kept`): how much of the photo's landmark yaw the teacher's image keeps, beside
    :func:`inversion_pose_ceiling`'s for the teacher's own faces; ``psnr_whole``: the mean PSNR
    of the teacher's images against the photos over the whole image, as that check measures it.
    ``detector``: the .onnx file, or a :class:`~digan.faces.detector.FaceDetector` already open
    (:func:`reconstruction_report` opens one for this and :func:`inversion_pose_ceiling`)."""
    pipe, det_path = _pose_pipeline(detector)
    y_photo = pipe.analyze(photos.clamp(-1, 1).cpu(), embed=False, pose=True).yaw
    y_inv = pipe.analyze(teacher_images.clamp(-1, 1).cpu(), embed=False, pose=True).yaw
    dv, true = np.asarray(dv_yaw, dtype=np.float64), np.asarray(true_yaw, dtype=np.float64)
    ok = np.isfinite(y_photo) & np.isfinite(y_inv) & np.isfinite(dv)
    n, found = len(true), int(ok.sum())
    out: dict[str, Any] = {"detector": det_path.name, "n_faces": n, "found": found,
                           "too_few": _too_few(found, n), "kept": yaw_kept(y_photo, y_inv),
                           "psnr_whole": _mean(_psnr_whole(teacher_images, photos))}
    nan = {"corr": float("nan"), "slope": float("nan")}
    if out["too_few"]:
        return {**out, "photo": dict(nan), "teacher_image": dict(nan), "dv_follows": {"photo": float("nan"), "teacher_image": float("nan")}}
    t = true[ok]
    out["photo"] = pose_agreement(y_photo[ok], t)
    out["teacher_image"] = pose_agreement(y_inv[ok], t)
    r_dv = _residual(dv[ok], t)
    out["dv_follows"] = {k: pose_agreement(_residual(y[ok], t), r_dv)["corr"] for k, y in (("photo", y_photo), ("teacher_image", y_inv))}
    out["per_face"] = {"photo_yaw": [float(v) for v in y_photo], "teacher_image_yaw": [float(v) for v in y_inv]}
    return out


def _open_detector(detector: str | Path | FaceDetector) -> FaceDetector:
    """``detector`` itself when it is an open :class:`~digan.faces.detector.FaceDetector` (its
    ONNX session reused), else the detector opened from that file."""
    from digan.faces.detector import FaceDetector

    return detector if isinstance(detector, FaceDetector) else FaceDetector(detector)


def _pose_pipeline(detector: str | Path | FaceDetector) -> tuple[Any, Path]:
    """A detection-and-pose :class:`~digan.faces.pipeline.FacePipeline` on ``detector``
    (:func:`_open_detector`), and the detector file's path."""
    from digan.faces.pipeline import FacePipeline

    det = _open_detector(detector)
    return FacePipeline(detector=det, recognizer=False), Path(det.path)


def _too_few(found: int, n: int) -> bool:
    """Too few faces read for a detector-based number to be a result: under 3, or under half."""
    return bool(found < max(3, (n + 1) // 2))


def _psnr_whole(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of (B,3,H,W) images in [-1, 1] over every pixel (:func:`masked_psnr`)."""
    a, b = a.detach().clamp(-1, 1).cpu(), b.detach().clamp(-1, 1).cpu()
    return masked_psnr(a, b, torch.ones_like(a[:, :1]))


def yaw_kept(source_yaw: np.ndarray, inverted_yaw: np.ndarray) -> dict[str, Any]:
    """How much of each source image's landmark yaw (degrees, NaN where the detector found no
    face) its inversion's teacher image keeps: ``corr`` and ``slope`` (:func:`pose_agreement`) of
    ``inverted_yaw`` on ``source_yaw`` over the ``found`` faces read on both; NaN and
    ``too_few`` when fewer than 3 (or under half) are."""
    a, b = np.asarray(source_yaw, dtype=np.float64), np.asarray(inverted_yaw, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    out: dict[str, Any] = {"found": int(ok.sum()), "too_few": _too_few(int(ok.sum()), len(a))}
    agree = {"corr": float("nan"), "slope": float("nan")} if out["too_few"] else pose_agreement(b[ok], a[ok])
    return {**agree, **out}


def inversion_pose_ceiling(student: Student, n: int, steps: int, detector: str | Path | FaceDetector, seed: int = 0,
                           lr: float = 0.05) -> dict[str, Any]:
    """Can the inversion itself keep a face's pose? ``n`` of the teacher's own faces (codes of
    ``seed``, untruncated), their images inverted back into the teacher exactly as a photo is
    (:func:`~digan.student.method.invert_teacher`, ``steps`` at ``lr``), and the detector's yaw
    of each re-inverted image against the original's (:func:`yaw_kept`), with the mean PSNR
    (``psnr``, whole image). These faces lie on the teacher's image manifold by construction,
    so when they come back whole (PSNR far above the photos', yaw kept at corr ~1) while the
    photos' inversions lose yaw, the optimiser is not the limit: the photos lie off what the
    teacher can draw, and only a better teacher moves DV's yaw further (docs/shape-history.md:
    "Where DV's yaw is lost"). A low ceiling instead points at the inversion (steps, lr)."""
    from digan.student.method import invert_teacher

    with torch.no_grad():
        src = student.teacher_image(student.style(student.latents(int(n), int(seed)), psi=1.0))
    back_w = invert_teacher(student.teacher, src, student.g3d.w_std, int(steps), float(lr))
    with torch.no_grad():
        back = student.teacher_image(back_w)
    pipe, _ = _pose_pipeline(detector)
    y_src = pipe.analyze(src.cpu(), embed=False, pose=True).yaw
    y_back = pipe.analyze(back.cpu(), embed=False, pose=True).yaw
    return {"n_faces": int(n), "seed": int(seed), "inversion_steps": int(steps), "psnr": _mean(_psnr_whole(back, src)),
            "source_yaw_std": float(np.nanstd(y_src)) if np.isfinite(y_src).any() else float("nan"),
            **yaw_kept(y_src, y_back)}


def _at_yaw(view: Any, yaw: float | np.ndarray) -> Any:
    """``view`` (a :class:`~digan.render.types.View`) with its yaw set to ``yaw`` (degrees, one
    value or one per face); pitch, roll and translation kept."""
    from digan.render.types import View

    rot = view.rotation.clone()
    rot[:, 1] = torch.as_tensor(yaw, dtype=rot.dtype, device=rot.device)
    return View(rot, view.translation)


#: candidate yaws (degrees) of :func:`render_fit_yaw`: -60..60 in 2-degree steps
FIT_YAWS = tuple(float(y) for y in range(-60, 61, 2))


def render_fit_yaw(student: Student, est: Any, target: torch.Tensor, yaws: tuple[float, ...] = FIT_YAWS) -> np.ndarray:
    """Per face, the yaw (degrees) at which the student's own render of ``est`` best matches
    ``target`` (B,3,S,S): the L1 of the whole image (what the reconstruction loss compares) over
    the candidate ``yaws``, DV's pitch, roll and translation and DL's light held, refined between
    grid points by a parabola through the best and its two neighbours. With the teacher's image
    of the same code as ``target`` this is the yaw the reconstruction loss asks of DV for that
    code, so DV's reading can be checked against its own renderer: on the bundle, for 60-step
    inversions of the tuning heads, it follows the true yaw with slope ~1.0 while DV reads 0.74;
    for training codes DV agrees with it (docs/shape-history.md)."""
    g = student.g3d
    grid = np.asarray(yaws, dtype=np.float64)
    if grid.ndim != 1 or len(grid) < 3 or np.any(np.diff(grid) <= 0):
        raise DiganError(f"render_fit_yaw needs at least 3 increasing candidate yaws, got {list(yaws)}")
    errs = []
    with torch.no_grad():
        tgt = target.to(student.device)
        for y in grid:
            out = g.render(est, student.renderer, view=_at_yaw(est.view, float(y)), filter_grads=False)
            errs.append((out.image - tgt).abs().flatten(1).mean(1).double().cpu().numpy())
    e = np.stack(errs)  # (Y, B)
    i = np.clip(e.argmin(0), 1, len(grid) - 2)
    cols = np.arange(e.shape[1])
    lo, mid, hi = e[i - 1, cols], e[i, cols], e[i + 1, cols]
    curv = lo - 2 * mid + hi
    off = np.where(curv > 0, 0.5 * (lo - hi) / np.where(curv > 0, curv, 1.0), 0.0).clip(-1, 1)
    step = np.where(off < 0, grid[i] - grid[i - 1], grid[i + 1] - grid[i])
    best = grid[i] + off * step
    at_end = (e.argmin(0) == 0) | (e.argmin(0) == len(grid) - 1)
    return np.where(at_end, grid[e.argmin(0)], best)


def masked_std(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image standard deviation of (B,1,H,W) ``x`` over ``mask`` (population std)."""
    m = mask.to(x.dtype)
    cnt = m.flatten(1).sum(1).clamp(min=1)
    mean = (x * m).flatten(1).sum(1) / cnt
    return ((((x - mean.view(-1, 1, 1, 1)) ** 2) * m).flatten(1).sum(1) / cnt).sqrt()


def _asym(img: torch.Tensor) -> float:
    return float((img - img.flip(3)).abs().mean())


@torch.no_grad()
def _scores(pred_depth: torch.Tensor, mask: torch.Tensor, gt: dict[str, torch.Tensor]) -> dict[str, float]:
    from evaluate.methods import Rendered
    from evaluate.metrics.depth3d import reconstruction_errors

    side, mad, _ = reconstruction_errors(Rendered(image=gt["image"], depth=pred_depth, normal=None, mask=mask), gt)
    return {"side": float(np.nanmean(side.numpy())), "mad": float(np.nanmean(mad.numpy()))}


def masked_psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB, float64) of (B,3,H,W) images in [-1, 1] (peak-to-peak 2, i.e. the
    usual PSNR of [0, 1] images) over the pixels of the (B,1,H,W) ``mask``, all channels.
    ``inf`` for identical images, NaN for an empty mask."""
    m = (mask > 0.5).double().expand_as(a)
    mse = (((a.double() - b.double()) ** 2) * m).flatten(1).sum(1) / m.flatten(1).sum(1)
    return 10 * torch.log10(4.0 / mse)


def _mean(x: torch.Tensor | np.ndarray) -> float:
    v = np.asarray(x, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _open_synth(synth_dir: str | Path, size: int) -> Any:
    """The ``digan-bench data synth`` set at ``synth_dir`` (one-line error when it is missing)."""
    from digan.data.synthetic import load_synth

    p = Path(synth_dir).expanduser()
    if not p.exists():
        raise DiganError(f"synthetic ground-truth set {p} not found; make it with 'digan-bench data synth --out {p} --size {size}'")
    return load_synth(p)


#: the scale of the depth detail check (Gaussian sigma in pixels at 64 px, scaled with the size):
#: a nose or a brow is a few pixels wide at 64 px
DETAIL_SIGMA_64 = 1.0


def _prior_depth(g: Any, n: int) -> torch.Tensor:
    """The student's training depth prior alone (DS's raw output 0), (n,1,S,S) on the CPU: the
    reference stays the prior the student was trained on, also when its estimates add their
    residual to the softened inference prior (``model.inference_prior_smooth``)."""
    from digan.student.model import raw_to_depth

    return raw_to_depth(torch.zeros_like(g.training_prior), g.training_prior, g.cfg.model).cpu().expand(n, -1, -1, -1)


def load_eval_faces(synth_dir: str | Path, n_faces: int, size: int) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """The first ``n_faces`` heads of a ``digan-bench data synth`` set as a ground-truth batch
    (``image``, ``depth``, ``normal``, ``mask``, ``light``: ambient, diffuse, dx, dy; ``rotation``:
    pitch, yaw, roll in degrees; ``translation``: tx, ty, tz in camera units and
    ``canonical_depth``: the head's frontal depth, when the set has them; CPU float)
    and their true yaws (degrees).
    At least 3 faces, at the student's ``size``; otherwise a one-line :class:`DiganError`."""
    data = _open_synth(synth_dir, size)
    n = min(int(n_faces), len(data))
    if n < 3:
        raise DiganError(f"the shape report needs at least 3 faces, got {n} ({synth_dir} holds {len(data)}); raise --n-faces (train.eval_faces) or make more with digan-bench data synth")
    items = [data[i] for i in range(n)]
    keys = ("image", "depth", "normal", "mask", "light", "rotation") + tuple(k for k in ("translation", "canonical_depth", "canonical_mask")
                                                                            if k in items[0])
    gt = {k: torch.stack([torch.as_tensor(it[k]) for it in items]).float() for k in keys}
    if gt["image"].shape[-1] != size:
        raise DiganError(f"synthetic faces are {gt['image'].shape[-1]} px but the student renders {size} px; make the set with --size {size}")
    return gt, np.array([float(it["rotation"][1]) for it in items])


def reconstruction_report(student: Student, gt: dict[str, torch.Tensor], true_yaw: np.ndarray, inversion_steps: int,
                          w: torch.Tensor | None = None, render_fit: bool = True, flip_average: bool | None = None,
                          detector: str | Path | FaceDetector | None = None) -> dict[str, Any]:
    """Invert each ground-truth image into the teacher, estimate and render the face at its
    predicted view, and score it (one owner of this pass: ``bench shape`` and the evaluation
    during training both call it).

    Returns JSON-ready: ``pose`` (DV yaw vs true yaw), ``render_fit_yaw`` (:func:`render_fit_yaw`
    against the teacher's image of the inverted code, vs the true yaw; ``dv_slope``: DV's yaw
    regressed on it), ``fit_pose`` (SIDE, MAD of the estimate rendered at that yaw), ``student``/``flat_plane``/``prior_only``/
    ``prior_posed``/``one_head``/``inverted_relief`` (SIDE, MAD, all on the student's pixels;
    ``one_head``: every face given the student's depth of the teacher's mean code, at DV's pose:
    the learnt depth with nothing per face), ``true_pose``
    (SIDE, MAD of the estimate rendered at the true rotation, when ``gt`` has ``rotation``; then
    also ``pitch``: DV's pitch vs the true pitch, when the true pitches vary), ``true_head`` /
    ``mean_true_head`` (SIDE, MAD of each face's true canonical depth, and of the mean true canonical
    depth of the other faces, at DV's pose without the T map, on the student's pixels; ground truth
    for reference, when ``gt`` has ``canonical_depth``), ``face``
    (``student``, ``prior_posed`` and ``one_head`` on the inner face, and its mean eroded ``pixels``),
    ``psnr`` (means, dB: ``teacher`` = the teacher's image of the
    inverted w, ``student`` = the student's render, both against the input inside the
    ground-truth mask), ``roughness`` (:func:`~evaluate.metrics.depth3d.depth_roughness` of the
    rendered depth, the ground truth's and the prior's on the same pixels: the ground-truth mask
    where the render covers, eroded by one pixel; ``ratio`` = student / ground truth of the
    means), ``detail`` (:func:`~evaluate.metrics.depth3d.depth_detail_agreement` of the rendered
    depth and of the posed prior against the ground truth on the inner face, curvature at
    :data:`DETAIL_SIGMA_64` px per 64: ``corr``, ``std_ratio``, ``prior_posed_corr``), the two
    L1 errors, and ``per_face`` lists. ``w``: style codes already inverted from ``gt["image"]``
    (skips their inversion; their mirrors are still inverted with mirror averaging).
    ``render_fit=False`` skips ``render_fit_yaw`` and ``fit_pose`` (62 renders; the evaluation
    during training does not log them). ``flip_average``: :meth:`Student.reconstruct`'s (default:
    the student's ``model.flip_average``); the report records it. The teacher's image (PSNR, the
    render-fit target) is that of the image's own code. ``detector``: an SCRFD face detector
    (.onnx); with it, ``landmark_yaw`` (:func:`landmark_yaw_check`: whose yaw DV's error follows,
    the photo's or the teacher's image of its code), with ``teacher_samples``
    (:func:`inversion_pose_ceiling`: as many of the teacher's own faces, inverted back the same way).
    """
    from evaluate.methods import Rendered
    from dataclasses import replace

    from evaluate.metrics.depth3d import (depth_detail_agreement, depth_roughness, erode_mask, flat_plane_errors, nose_protrusion, nose_summary,
                                          reconstruction_errors)

    s, g = student, student.g3d
    n = gt["image"].shape[0]
    rec = s.reconstruct(gt["image"], inversion_steps, w=w, flip_average=flip_average)
    wi, e2 = rec.w, rec.estimate
    with torch.no_grad():
        rend = g.render(e2, s.renderer, filter_grads=False, extra=g.foreground(e2.depth))
        inv_img = s.teacher_image(wi)
        if rec.shift is not None and bool((rec.shift != 0).any()):  # what the inversion fitted: G(w), shifted
            from digan.student.method import shift_images

            inv_img = shift_images(inv_img, rec.shift)
        inv_img = inv_img.cpu()
    mask = g.view_foreground(rend).cpu()
    depth = rend.depth.cpu()
    image = rend.image.clamp(-1, 1).cpu()
    out: dict[str, Any] = {"n_faces": int(n), "inversion_steps": int(inversion_steps), "flip_average": rec.w_mirror is not None,
                           "prior_smooth": g.prior_smooth, "inversion_shift_lr": float(s.cfg.model.inversion_shift_lr)}
    if out["inversion_shift_lr"] > 0 and rec.shift is not None:  # the fitted image shift against the true one
        from digan.render.camera import focal_length

        f = focal_length(g.size, float(s.cfg.renderer.fov))
        dx = rec.shift[:, 0].cpu().double().numpy()
        out["inversion_shift"] = {"std_px": float(dx.std())}
        if "translation" in gt:
            true_px = gt["translation"][:, 0].double().numpy() * f
            out["inversion_shift"].update(true_std_px=float(true_px.std()), corr_true=pose_agreement(dx, true_px)["corr"])
    pred_yaw = e2.view.rotation[:, 1].cpu().numpy()
    out["pose"] = pose_agreement(pred_yaw, true_yaw)
    out["pose"]["true_yaw_std"] = float(true_yaw.std())
    ci = corr_interval(out["pose"]["corr"], len(pred_yaw))
    if ci is not None:  # how much of a miss or a pass is the draw of faces
        out["pose"]["corr_ci95"] = list(ci)
    if "rotation" in gt:  # DV's pitch: nothing in the objective anchors it (docs/shape-history.md)
        true_pitch = gt["rotation"][:, 0].double().numpy()
        pred_pitch = e2.view.rotation[:, 0].cpu().double().numpy()
        if true_pitch.std() > 0:
            out["pitch"] = {**pose_agreement(pred_pitch, true_pitch), "true_pitch_std": float(true_pitch.std()),
                            "pred_pitch_std": float(pred_pitch.std())}
    out["shift"] = shift_agreement(e2.view.translation[:, 0].cpu().numpy(), pred_yaw,
                                   gt["translation"][:, 0].numpy() if "translation" in gt else None)
    out["light_agreement"] = light_agreement(e2.light, gt["light"])
    out["compose_gain"] = compose_rotation_gain(s, wi.detach(), e2.light_raw, gt["image"], true_yaw)
    out["code_spread"] = code_spread(s, wi.detach())
    fit_yaw = render_fit_yaw(s, e2, inv_img) if render_fit else None  # the yaw the reconstruction loss asks of DV here
    if fit_yaw is not None:
        out["render_fit_yaw"] = {**pose_agreement(fit_yaw, true_yaw), "dv_slope": pose_agreement(pred_yaw, fit_yaw)["slope"]}
    if detector is not None:  # one ONNX session for both checks
        det = _open_detector(detector)
        out["landmark_yaw"] = landmark_yaw_check(gt["image"], inv_img, pred_yaw, true_yaw, det)
        out["landmark_yaw"]["teacher_samples"] = inversion_pose_ceiling(s, n, inversion_steps, det)
    out["reconstruction_l1"] = float((image - gt["image"]).abs().mean())
    out["teacher_inversion_l1"] = float((inv_img - gt["image"]).abs().mean())
    psnr_t, psnr_s = masked_psnr(inv_img, gt["image"], gt["mask"]), masked_psnr(image, gt["image"], gt["mask"])
    out["psnr"] = {"teacher": _mean(psnr_t), "student": _mean(psnr_s)}

    side, mad, _ = reconstruction_errors(Rendered(image=gt["image"], depth=depth, normal=None, mask=mask), gt)
    out["student"] = {"side": _mean(side), "mad": _mean(mad)}
    fs, fm, _ = flat_plane_errors(Rendered(image=gt["image"], depth=depth, normal=None, mask=mask), gt)
    out["flat_plane"] = {"side": _mean(fs), "mad": _mean(fm)}
    # the references are scored on the student's pixels (as the flat plane is): a reference scored
    # on its own, smaller mask (the prior's ellipse leaves out neck and hair) is not comparable
    prior = _prior_depth(g, n)
    out["prior_only"] = _scores(prior, mask, gt)

    @torch.no_grad()
    def at_dv_pose(d: torch.Tensor, transform_map: Any = e2.transform_map) -> Any:
        """The render of depth ``d`` in place of the estimate's, at its view and light (with the
        foreground channel :meth:`G3D.view_foreground` reads)."""
        d = d.to(e2.depth.device)
        return g.render(replace(e2, depth=d, transform_map=transform_map), s.renderer, filter_grads=False, extra=g.foreground(d))

    rend_p = at_dv_pose(prior)
    posed = rend_p.depth.cpu()
    out["prior_posed"] = _scores(posed, mask, gt)
    # the inner face: the prior's ellipse carried to the view, where the prior is a real guess
    face = mask * g.view_foreground(rend_p).cpu()
    # one head for every face: the student's depth of the teacher's mean code (mirror-averaged
    # when the estimates are), at DV's pose: what the learnt depth gives without anything per face
    with torch.no_grad():
        wm = s.teacher.w_mean.reshape(1, -1).to(e2.depth.device)
        one = s.estimate(wm)
        if rec.w_mirror is not None:
            one = g.average_estimates([one, g.mirror_estimate(one)])
    one_posed = at_dv_pose(one.depth.expand(n, -1, -1, -1)).depth.cpu()
    out["one_head"] = _scores(one_posed, mask, gt)
    out["face"] = {"student": _scores(depth, face, gt), "prior_posed": _scores(posed, face, gt),
                   "one_head": _scores(one_posed, face, gt), "pixels": _mean(erode_mask(face).flatten(1).sum(1))}
    if "canonical_depth" in gt:  # ground truth at DV's pose: each face's own head, and the others' mean head
        cd = gt["canonical_depth"]
        others = (cd.sum(0, keepdim=True) - cd) / (n - 1)  # leave-one-out: no face scores its own shape
        for key, d in (("true_head", cd), ("mean_true_head", others)):
            out[key] = _scores(at_dv_pose(d, transform_map=None).depth.cpu(), mask, gt)
        # the nose in the canonical (frontal) frame: how far its tip stands out of its flanks, at
        # each true nose tip, the student's beside the truth's, the one head's and the prior's
        cm = gt["canonical_mask"] if "canonical_mask" in gt else (cd < cd.amax(dim=(2, 3), keepdim=True) - 1e-3).float()
        nose = nose_protrusion({"student": e2.depth.cpu(), "one_head": one.depth.cpu().expand(n, -1, -1, -1), "prior": prior},
                               cd, cm)
        out["nose"] = nose_summary(nose)
    if "rotation" in gt:  # the same estimate at the true rotation: what a perfect pose would give
        from digan.render.types import View

        with torch.no_grad():
            tv = View(rotation=gt["rotation"].to(e2.view.rotation), translation=e2.view.translation)
            rend_t = g.render(e2, s.renderer, view=tv, filter_grads=False, extra=g.foreground(e2.depth))
        out["true_pose"] = _scores(rend_t.depth.cpu(), g.view_foreground(rend_t).cpu(), gt)
    if fit_yaw is not None:  # the same estimate at the render-fit yaw: what the model's own renderer reads
        with torch.no_grad():
            rend_f = g.render(e2, s.renderer, view=_at_yaw(e2.view, fit_yaw), filter_grads=False, extra=g.foreground(e2.depth))
        out["fit_pose"] = _scores(rend_f.depth.cpu(), g.view_foreground(rend_f).cpu(), gt)
    m = mask > 0.5
    mu = (depth * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp(min=1)
    out["inverted_relief"] = _scores(torch.where(m, 2 * mu.view(-1, 1, 1, 1) - depth, depth), mask, gt)

    rmask = (gt["mask"] > 0.5).float() * rend.mask.cpu()
    r_s, r_gt, r_p = depth_roughness(depth, rmask), depth_roughness(gt["depth"], rmask), depth_roughness(prior, rmask)
    rough = {"student": _mean(r_s), "ground_truth": _mean(r_gt), "prior_only": _mean(r_p)}
    gt_r = rough["ground_truth"]
    rough["ratio"] = rough["student"] / gt_r if gt_r > 0 else float("nan")
    rough["prior_ratio"] = rough["prior_only"] / gt_r if gt_r > 0 else float("nan")
    out["roughness"] = rough
    sigma = DETAIL_SIGMA_64 * depth.shape[-1] / 64  # on the inner face, where nose, brow and lips are
    dc, dr = depth_detail_agreement(depth, gt["depth"], face, sigma)
    pc, _ = depth_detail_agreement(posed, gt["depth"], face, sigma)
    out["detail"] = {"corr": _mean(dc), "std_ratio": _mean(dr), "prior_posed_corr": _mean(pc), "sigma_px": float(sigma)}

    def lst(x: Any) -> list[float]:
        return [float(v) for v in np.asarray(x, dtype=np.float64)]

    out["per_face"] = {"true_yaw": lst(true_yaw), "pred_yaw": lst(pred_yaw), "psnr_teacher": lst(psnr_t), "psnr_student": lst(psnr_s),
                       "side": lst(side), "mad": lst(mad), "roughness": lst(r_s), "roughness_gt": lst(r_gt),
                       "detail_corr": lst(dc)}
    if fit_yaw is not None:
        out["per_face"]["fit_yaw"] = lst(fit_yaw)
    return out


def profile_views(student: Student, synth_dir: str | Path, n_faces: int = 6, yaws: tuple[float, ...] = (-60.0, 60.0),
                  inversion_steps: int = 60, flip_average: bool | None = None) -> dict[str, Any]:
    """The first ``n_faces`` heads of ``synth_dir`` seen from the side, the truth beside the
    student, for judging by eye whether side views show a profile (nose, brow, chin) where the
    true head at the same resolution shows one: the ground-truth head (its identity as imaged,
    rendered by the synthetic generator at yaw ``y``, pitch 0) and the student's estimate of
    the inverted image (its canonical depth rendered at the same absolute yaw), both by the
    same mesh renderer (:func:`reports.figures.profile_figure` draws them as grey clay).

    Returns ``image`` (the inputs, (n,3,S,S) in [-1,1]), ``true_yaw`` (degrees), ``yaws``, and
    ``truth`` / ``student``: per yaw a pair (normals (n,3,S,S) in the renderer's frame, head
    mask (n,1,S,S) of 0/1), on the CPU."""
    from digan.data.synth import read_synth_config, render_views

    s, g = student, student.g3d
    gt, true_yaw = load_eval_faces(synth_dir, n_faces, g.size)
    data = _open_synth(synth_dir, g.size)
    cfg = read_synth_config(synth_dir)
    n = gt["image"].shape[0]
    ident = np.asarray(data.arrays["identity"])[:n]
    params = [data.identity_params(int(k)) for k in ident]
    est = s.reconstruct(gt["image"], inversion_steps, flip_average=flip_average).estimate
    out: dict[str, Any] = {"image": gt["image"], "true_yaw": [float(v) for v in true_yaw], "yaws": [float(y) for y in yaws],
                           "truth": [], "student": []}
    light = np.tile(np.array([[0.5, 0.5, 0.0, 0.0]], np.float32), (n, 1))
    with torch.no_grad():
        for y in yaws:
            views = np.zeros((n, 6), np.float32)
            views[:, 1] = y
            t = render_views(params, views, light, g.size, fov=cfg.fov)
            out["truth"].append((t["normal"].float().cpu(), (t["mask"] > 0.5).float().cpu()))
            r = s.render(est, yaw=float(y), pitch=0.0, extra=g.foreground(est.depth))
            out["student"].append((r.normal.float().cpu(), (g.view_foreground(r) > 0.5).float().cpu()))
    return out


def shape_diagnostics(student: Student, synth_dir: str | Path, n_faces: int = 24, inversion_steps: int = 60,
                      n_samples: int = 64, seed: int = 123, relight_faces: int = 16, flip_average: bool | None = None,
                      detector: str | Path | None = None) -> dict[str, Any]:
    """The report described in the module docstring, for ``n_faces`` images of ``synth_dir``
    (inverted with ``inversion_steps`` steps; ``flip_average`` and ``detector`` as
    :func:`reconstruction_report`)
    and ``n_samples`` teacher samples of ``seed``; with
    ``relight_faces`` > 0 also :func:`teacher_relighting` on that many of its identities."""
    s, g = student, student.g3d
    out: dict[str, Any] = {"n_faces": 0, "n_samples": n_samples, "inversion_steps": inversion_steps, "seed": seed}
    w = s.style(s.latents(n_samples, seed=seed))
    est = s.estimate(w)
    teacher_img = s.teacher_image(w)
    fg = g.foreground(est.depth)
    out["light"] = {"ambient": float(est.light.ambient.mean()), "diffuse": float(est.light.diffuse.mean()),
                    "direction_std": [float(v) for v in est.light.direction.std(0)]}
    out["relief_std"] = float(masked_std(est.depth, fg).mean())
    out["neutral_code"] = neutral_code_spread(w, est.w0)
    out["asymmetry"] = {"canonical": _asym(est.canonical.clamp(-1, 1)), "teacher": _asym(teacher_img)}
    gt, true_yaw = load_eval_faces(synth_dir, n_faces, g.size)
    out.update(reconstruction_report(s, gt, true_yaw, inversion_steps, flip_average=flip_average, detector=detector))
    if relight_faces > 0:
        try:
            out["teacher_relighting"] = teacher_relighting(s, synth_dir, relight_faces, inversion_steps=inversion_steps)
        except DiganError as e:  # a set with too few identities: the rest of the report stands
            out["teacher_relighting"] = {"skipped": str(e)}
    return out


def _f(v: float, fmt: str) -> str:
    return format(v, fmt) if v is not None and np.isfinite(v) else "n/a"


def _landmark_lines(ly: dict[str, Any]) -> list[tuple[str, str]]:
    """The report's (label, value) rows for :func:`landmark_yaw_check`'s result."""
    rows = _kept_lines(ly)
    if ly["too_few"]:
        return [("landmark yaw (detector)", f"too few faces found ({ly['found']} of {ly['n_faces']})")] + rows
    ph, ti, fo = ly["photo"], ly["teacher_image"], ly["dv_follows"]
    return [("landmark yaw photo / G(w)", f"corr {_f(ph['corr'], '+.2f')} / {_f(ti['corr'], '+.2f')}, "
                                          f"slope {_f(ph['slope'], '+.2f')} / {_f(ti['slope'], '+.2f')}"),
            ("DV yaw error follows", f"photo's {_f(fo['photo'], '+.2f')}, G(w)'s {_f(fo['teacher_image'], '+.2f')} "
                                     f"({ly['found']} faces)")] + rows


def _kept_lines(ly: dict[str, Any]) -> list[tuple[str, str]]:
    """The "yaw kept by inversion" row: :func:`yaw_kept` of the photos and of the teacher's own
    faces (``teacher_samples``), each with its whole-image PSNR; absent in older reports."""
    def one(k: dict[str, Any] | None, psnr: float) -> str:
        if k is None:
            return "n/a"
        return f"{_f(k['corr'], '+.2f')} ({_f(psnr, '.1f')} dB)" if not k["too_few"] else "too few found"

    if "kept" not in ly:
        return []
    ts = ly.get("teacher_samples")
    return [("yaw kept by inversion", f"photo {one(ly['kept'], ly['psnr_whole'])}, G's own "
                                      f"{one(ts, ts['psnr'] if ts else float('nan'))}")]


def shape_report_lines(rep: dict[str, Any]) -> list[str]:
    """The printed form of a :func:`shape_diagnostics` report, every line within 80 columns: a
    per-face table (true and DV yaw, PSNR of the teacher's inversion and of the student's render
    inside the ground-truth mask, SIDE, MAD, roughness / ground truth's), then the summary."""
    pf = rep["per_face"]
    lines = [f"{'face':>4} {'true yaw':>8} {'DV yaw':>7} {'PSNR inv.':>10} {'PSNR render':>11} {'SIDE e-2':>9} {'MAD deg':>8} {'rough/GT':>9}"]
    for i in range(len(pf["true_yaw"])):
        ratio = pf["roughness"][i] / pf["roughness_gt"][i] if pf["roughness_gt"][i] > 0 else float("nan")
        lines.append(f"{i:>4} {_f(pf['true_yaw'][i], '+8.1f')} {_f(pf['pred_yaw'][i], '+7.1f')} {_f(pf['psnr_teacher'][i], '7.1f'):>7} dB "
                     f"{_f(pf['psnr_student'][i], '8.1f'):>8} dB {_f(pf['side'][i] * 100, '9.3f'):>9} {_f(pf['mad'][i], '8.1f'):>8} "
                     f"{_f(ratio, '8.2f'):>8}x")
    r, ps, la, cs = rep["roughness"], rep["psnr"], rep["light_agreement"], rep["code_spread"]
    how = "image and mirror, averaged" if rep.get("flip_average") else "one per image"
    rows = [("inversions", f"{rep['inversion_steps']} steps, {how}")]
    if rep.get("inversion_shift_lr"):
        sh = rep.get("inversion_shift", {})
        text = f"lr {rep['inversion_shift_lr']:g}: x std {_f(sh.get('std_px'), '.2f')} px"
        if "corr_true" in sh:
            text += f" (true {_f(sh.get('true_std_px'), '.2f')}), corr {_f(sh['corr_true'], '+.2f')}"
        rows.append(("image shift", text))
    if rep.get("prior_smooth") is not None:  # model.inference_prior_smooth (or bench shape --prior-smooth)
        low = float(rep["prior_smooth"])
        rows.append(("depth prior", f"low-passed by {low:g} px (per 64)" if low > 0 else "sharp"))
    ci = rep["pose"].get("corr_ci95")
    ci_text = f" (95% {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""
    rows.append(("DV yaw vs true yaw", f"corr {rep['pose']['corr']:+.3f}{ci_text}, slope {rep['pose']['slope']:+.2f}"))
    if "render_fit_yaw" in rep:
        fy = rep["render_fit_yaw"]
        rows.append(("render-fit yaw vs true yaw", f"corr {_f(fy['corr'], '+.2f')}, slope {_f(fy['slope'], '+.2f')} "
                                                   f"(DV reads {_f(fy['dv_slope'], '.2f')}x it)"))
    if "landmark_yaw" in rep:
        rows += _landmark_lines(rep["landmark_yaw"])
    rows += [
        ("asymmetry G(w0) / teacher", f"{rep['asymmetry']['canonical']:.3f} / {rep['asymmetry']['teacher']:.3f}"),
        ("ambient / diffuse", f"{rep['light']['ambient']:.2f} / {rep['light']['diffuse']:.2f}"),
        ("DL light vs true: dx, dy", f"corr {_f(la['dx_corr'], '+.2f')}, {_f(la['dy_corr'], '+.2f')}; "
                                     f"spread {la['direction_std_pred']:.2f} vs {la['direction_std_true']:.2f}"),
        ("M turns G(w) / DV by", f"{_f(rep['compose_gain']['image'], '.2f')} / {_f(rep['compose_gain']['dv'], '.2f')} of the asked yaw"),
        ("DV input spread inv./train", f"{_f(cs['inverted'], '.2f')} / {_f(cs['trained'], '.2f')} (psi {cs['truncation']:g}): "
                                       f"{_f(cs['ratio'], '.2f')}x"),
        ("relief (depth std)", f"{rep['relief_std']:.4f}"),
    ]
    if "neutral_code" in rep:  # reports written before the twentieth session lack it
        nc = rep["neutral_code"]
        rows.append(("neutral code w0 vs w", f"spread {_f(nc['ratio'], '.2f')}x, nearest its own w: "
                                             f"{round(nc['own'] * nc['n'])} of {nc['n']}"))
    rows += [
        ("PSNR inversion / render", f"{_f(ps['teacher'], '.1f')} / {_f(ps['student'], '.1f')} dB (mean, in GT mask)"),
    ]
    for name, label in (("student", "student"), ("flat_plane", "flat plane"), ("prior_only", "prior, frontal"),
                        ("prior_posed", "prior, DV pose"), ("one_head", "one head, DV pose"), ("inverted_relief", "inverted relief")):
        rows.append((f"SIDE / MAD {label}", f"{rep[name]['side'] * 100:.3f}e-2 / {rep[name]['mad']:.1f} deg"))
    if "true_pose" in rep:
        tp = rep["true_pose"]
        rows.append(("SIDE / MAD at true rotation", f"{tp['side'] * 100:.3f}e-2 / {tp['mad']:.1f} deg (pose costs "
                                                   f"{rep['student']['mad'] - tp['mad']:+.1f})"))
    for name, label, what in (("true_head", "GT shape, DV pose", "a perfect shape"), ("mean_true_head", "mean GT head, DV pose", "best one head")):
        if name in rep:
            rows.append((label, f"{rep[name]['side'] * 100:.3f}e-2 / {rep[name]['mad']:.1f} deg ({what})"))
    if "pitch" in rep:
        pt = rep["pitch"]
        rows.append(("DV pitch vs true pitch", f"corr {_f(pt['corr'], '+.2f')}, slope {_f(pt['slope'], '+.2f')}; "
                                               f"spread {pt['pred_pitch_std']:.1f} vs {pt['true_pitch_std']:.1f} deg"))
    if "shift" in rep:
        sh = rep["shift"]
        true_part = f"; std {sh['pred_std']:.4f} vs {sh['true_std']:.4f}" if "true_std" in sh else ""
        rows.append(("DV x shift vs DV yaw", f"{sh['per_10deg']:+.4f}/10 deg, corr {_f(sh['corr_yaw'], '+.2f')}{true_part}"))
    if "fit_pose" in rep:
        fp = rep["fit_pose"]
        rows.append(("SIDE / MAD at render-fit yaw", f"{fp['side'] * 100:.3f}e-2 / {fp['mad']:.1f} deg"))
    fc = rep["face"]
    for name, label in (("student", "student"), ("prior_posed", "prior, DV pose"), ("one_head", "one head")):
        rows.append((f"inner face: {label}", f"{fc[name]['side'] * 100:.3f}e-2 / {fc[name]['mad']:.1f} deg"))
    rows.append(("roughness student / GT", f"{_f(r['student'], '.3e')} / {_f(r['ground_truth'], '.3e')} = {_f(r['ratio'], '.2f')}x"))
    rows.append(("roughness prior only / GT", f"{_f(r['prior_only'], '.3e')} / {_f(r['ground_truth'], '.3e')} = {_f(r['prior_ratio'], '.2f')}x"))
    if "detail" in rep:
        dt = rep["detail"]
        rows.append(("inner-face curvature vs GT", f"corr {_f(dt['corr'], '+.2f')} (posed prior {_f(dt['prior_posed_corr'], '+.2f')}), "
                                                 f"size {_f(dt['std_ratio'], '.2f')}x"))
    if "nose" in rep:
        ns = rep["nose"]
        rows.append(("nose protrusion / GT's", f"{_f(ns['student_ratio'], '.2f')}x (one head {_f(ns['one_head_ratio'], '.2f')}x, "
                                               f"prior {_f(ns['prior_ratio'], '.2f')}x; GT {_f(ns['truth'] * 1000, '.1f')}e-3)"))
    tr = rep.get("teacher_relighting")
    if tr and "skipped" in tr:
        why = "fewer than 3 identities" if "at least 3 identities" in tr["skipped"] else "see the JSON report"
        rows.append(("teacher relighting check", f"skipped ({why})"))
    elif tr:
        tt, tu = tr["teacher"], tr["truth"]
        rows.append((f"relit +-{tr['light_dx']:.1f}: R2 true/prior", f"teacher {_f(tt['true_normals'], '.2f')} / "
                     f"{_f(tt['prior'], '.2f')}, real {_f(tu['true_normals'], '.2f')} / {_f(tu['prior'], '.2f')}"))
        rows.append(("relit: R2 student's normals", f"teacher {_f(tt['student'], '.2f')}, real {_f(tu['student'], '.2f')}"))
        rows.append(("face form kept by teacher", f"corr {_f(tr['form_corr'], '+.2f')} (1 = all; PSNR {_f(tr['psnr'], '.1f')} dB)"))
    return lines + [f"{k:28s} {v}" for k, v in rows]


# --------------------------------------------------------------------------------------------
# evaluation during training (``digan-bench train ... --eval-data SYNTH_DIR``)

#: the log files in a training run folder (one row per evaluation, same columns in both)
SHAPE_EVAL_JSONL = "shape_eval.jsonl"
SHAPE_EVAL_CSV = "shape_eval.csv"
#: their columns: SIDE/MAD/roughness of the student, the ground truth's roughness on the same
#: pixels, the flat-plane, prior-only and posed-prior references (the student's pixels), MAD on
#: the inner face (student, posed prior), "one head" (MAD), the best one head (MAD of the other
#: heads' mean true head at DV's pose: ground truth, when the set has canonical depths), MAD at
#: the true rotation, M's rotation gain (compose_rotation_gain's ``image``), DV yaw vs true yaw,
#: DV's pitch correlation with the true pitch, the depth detail correlation
#: (depth_detail_agreement), the nose's protrusion over the truth's (nose_protrusion, when the set
#: has canonical depths), inversion PSNR (dB), and the neutral code's spread and own-face
#: fraction over 64 teacher samples (:func:`neutral_code_spread`: a compose net collapsing to one
#: face shows here)
SHAPE_EVAL_COLUMNS = ("step", "side", "mad", "roughness", "roughness_gt", "roughness_ratio", "flat_side", "flat_mad",
                      "prior_side", "prior_mad", "prior_roughness", "posed_prior_side", "posed_prior_mad", "face_mad", "face_prior_mad", "one_head_mad", "mean_true_head_mad", "true_pose_mad", "compose_gain", "yaw_corr", "yaw_slope", "pitch_corr", "detail_corr", "nose_ratio", "light_dx_corr", "light_dy_corr", "psnr_teacher", "psnr_student",
                      "w0_spread", "w0_own", "n_faces", "inversion_steps", "eval_seconds")


def shape_eval_row(step: int, rep: dict[str, Any], seconds: float = float("nan")) -> dict[str, Any]:
    """One log row (:data:`SHAPE_EVAL_COLUMNS`) from a :func:`reconstruction_report`; non-finite
    numbers become ``None`` (JSON ``null``, an empty CSV cell)."""
    vals = {
        "step": int(step), "side": rep["student"]["side"], "mad": rep["student"]["mad"],
        "roughness": rep["roughness"]["student"], "roughness_gt": rep["roughness"]["ground_truth"],
        "roughness_ratio": rep["roughness"]["ratio"], "flat_side": rep["flat_plane"]["side"], "flat_mad": rep["flat_plane"]["mad"],
        "prior_side": rep["prior_only"]["side"], "prior_mad": rep["prior_only"]["mad"], "prior_roughness": rep["roughness"]["prior_only"],
        "posed_prior_side": rep["prior_posed"]["side"], "posed_prior_mad": rep["prior_posed"]["mad"],
        "face_mad": rep["face"]["student"]["mad"], "face_prior_mad": rep["face"]["prior_posed"]["mad"],
        "one_head_mad": rep.get("one_head", {}).get("mad", float("nan")),
        "mean_true_head_mad": rep.get("mean_true_head", {}).get("mad", float("nan")),
        "true_pose_mad": rep.get("true_pose", {}).get("mad", float("nan")),
        "compose_gain": rep["compose_gain"]["image"],
        "yaw_corr": rep["pose"]["corr"], "yaw_slope": rep["pose"]["slope"], "pitch_corr": rep.get("pitch", {}).get("corr", float("nan")),
        "detail_corr": rep.get("detail", {}).get("corr", float("nan")),
        "nose_ratio": rep.get("nose", {}).get("student_ratio", float("nan")),
        "light_dx_corr": rep["light_agreement"]["dx_corr"], "light_dy_corr": rep["light_agreement"]["dy_corr"], "psnr_teacher": rep["psnr"]["teacher"],
        "psnr_student": rep["psnr"]["student"], "w0_spread": rep.get("neutral_code", {}).get("ratio", float("nan")),
        "w0_own": rep.get("neutral_code", {}).get("own", float("nan")), "n_faces": int(rep["n_faces"]), "inversion_steps": int(rep["inversion_steps"]),
        "eval_seconds": round(float(seconds), 3),
    }
    return {k: (v if isinstance(v, int) or (v is not None and np.isfinite(v)) else None) for k, v in vals.items()}


def read_shape_eval(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``run_dir/shape_eval.jsonl`` (or that file), sorted by step; [] when absent."""
    import json

    p = Path(run_dir)
    f = p if p.is_file() else p / SHAPE_EVAL_JSONL
    if not f.is_file():
        return []
    from digan.utils.io import read_text

    lines = read_text(f, "delete the file and resume the run to rebuild it").splitlines()
    rows = []
    for k, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            int(row["step"])
        except (ValueError, KeyError, TypeError) as e:
            raise DiganError(f"{f} line {k} is not a shape evaluation row ({type(e).__name__}); delete the file and resume the run to rebuild it") from e
        rows.append(row)
    return sorted(rows, key=lambda r: int(r["step"]))


def _write_shape_eval(out_dir: Path, rows: list[dict[str, Any]]) -> None:
    import csv
    import io
    import json

    from digan.utils.io import write_text

    write_text(out_dir / SHAPE_EVAL_JSONL, "".join(json.dumps(r) + "\n" for r in rows))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(SHAPE_EVAL_COLUMNS), extrasaction="ignore", restval="")
    w.writeheader()
    w.writerows([{k: ("" if v is None else v) for k, v in r.items()} for r in rows])
    write_text(out_dir / SHAPE_EVAL_CSV, buf.getvalue())


class TrainingShapeEval:
    """3D accuracy on held-out synthetic heads, measured while a student trains (rank 0 only).

    Every ``every`` steps (and at step 0 of a fresh run, and at the last step) the first
    ``n_faces`` heads of ``synth_dir`` go through :func:`reconstruction_report` (teacher
    inversion with ``inversion_steps`` steps: few, so it costs little; the absolute SIDE/MAD are
    then somewhat worse than ``bench shape``'s, the trend is what it shows) and one row of
    :data:`SHAPE_EVAL_COLUMNS` is appended to ``OUT/shape_eval.jsonl`` and ``OUT/shape_eval.csv``.
    ``digan-bench report --runs OUT`` plots them.

    Resume: opening the log keeps only the rows up to the checkpoint's step ``start`` (all of
    them are dropped on a fresh start, ``start == 0``), so a resumed run appends without
    duplicated steps. The evaluation runs in eval mode with the RNG state forked: training is
    bit-for-bit the same with or without it.
    """

    def __init__(self, out_dir: str | Path, synth_dir: str | Path, g3d: Any, teacher: Any, cfg: Any, device: torch.device | str,
                 start: int, every: int, n_faces: int = 16, inversion_steps: int = 30):
        from digan.student.model import G3D

        if not isinstance(g3d, G3D):
            raise DiganError(f"train.eval_data needs a model with a depth map (digan, liftgan); '{cfg.model.name}' has none: drop --eval-data")
        if int(every) < 1 or int(n_faces) < 3 or int(inversion_steps) < 1:
            raise DiganError(f"bad shape evaluation settings (eval_every {every}, eval_faces {n_faces}, eval_inversion_steps {inversion_steps}): "
                             "use eval_every >= 1, eval_faces >= 3, eval_inversion_steps >= 1")
        self.out = Path(out_dir)
        self.every, self.inversion_steps = int(every), int(inversion_steps)
        self.gt, self.true_yaw = load_eval_faces(synth_dir, n_faces, g3d.size)
        was = g3d.training
        self.student = Student(g3d, teacher, cfg, device)
        g3d.train(was)
        self.rows = [r for r in read_shape_eval(self.out) if 0 < start and int(r["step"]) <= start]

    def due(self, step: int, total_steps: int) -> bool:
        return step % self.every == 0 or step == total_steps

    def __call__(self, step: int) -> dict[str, Any]:
        """Evaluate now, append the row for ``step`` and rewrite both log files (atomically)."""
        import time

        g3d = self.student.g3d
        dev = self.student.device
        was = g3d.training
        t0 = time.time()
        g3d.eval()
        try:
            with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), g3d.inference_prior_used():
                rep = reconstruction_report(self.student, self.gt, self.true_yaw, self.inversion_steps, render_fit=False)
                w = self.student.style(self.student.latents(64, seed=123))  # as bench shape's samples
                with torch.no_grad():
                    rep["neutral_code"] = neutral_code_spread(w, self.student.estimate(w).w0)
        finally:
            g3d.train(was)
        row = shape_eval_row(step, rep, time.time() - t0)
        self.rows = [r for r in self.rows if int(r["step"]) != int(step)] + [row]
        _write_shape_eval(self.out, self.rows)
        return row


# --------------------------------------------------------------------------------------------
# does the teacher carry the face's form in its shading? (``bench shape``, "teacher relit")

#: ambient and diffuse strength of :func:`teacher_relighting`'s pair of lights (mid-range of
#: the synthetic heads' lights)
RELIGHT_AMBIENT_DIFFUSE = (0.5, 0.55)
#: the grids :func:`relighting_fit` searches: ambient / diffuse ratio and horizontal directions
RELIGHT_RATIOS = (0.15, 0.25, 0.4, 0.6, 0.85, 1.2, 1.7, 2.5, 4.0)
RELIGHT_DIRECTIONS = tuple(round(-1.5 + 0.1 * i, 1) for i in range(31))


def relighting_fit(ratio: torch.Tensor, normal: torch.Tensor, mask: torch.Tensor) -> dict[str, Any]:
    """How well Lambertian shading on ``normal`` explains a log-ratio image of two lights.

    ``ratio`` (B,1,H,W) = ``log I1 - log I2`` of one face under two lights at one view,
    ``normal`` (B,3,H,W) unit normals, ``mask`` (B,1,H,W) the pixels to fit. Model per face:
    ``log(k + max(0, n.l1)) - log(k + max(0, n.l2)) + c`` with ``l = normalize(dx, 0, 1)``;
    ``k`` (ambient / diffuse) and ``dx1, dx2`` are searched on :data:`RELIGHT_RATIOS` x
    :data:`RELIGHT_DIRECTIONS`, ``c`` is the best constant. Albedo cancels in the ratio, so
    only the normals and the light are tested. Returns per face ``r2`` (1 - residual variance /
    the ratio's variance), ``params`` (k, dx1, dx2) and the ``residual`` (1-D, masked pixels)."""
    dirs = torch.tensor(RELIGHT_DIRECTIONS, dtype=torch.float32)
    ls = torch.stack([dirs, torch.zeros_like(dirs), torch.ones_like(dirs)], 1)
    ls = ls / ls.norm(dim=1, keepdim=True)
    r2s, params, residuals = [], [], []
    for k in range(ratio.shape[0]):
        sel = mask[k, 0] > 0.5
        rr = ratio[k, 0][sel].float()
        if rr.numel() < 10:
            r2s.append(float("nan"))
            params.append((float("nan"),) * 3)
            residuals.append(torch.zeros(0))
            continue
        nd = (ls @ normal[k][:, sel].float()).clamp(min=0)  # (D,P)
        var = float(((rr - rr.mean()) ** 2).mean())
        best = (float("inf"), None, None)
        for kr in RELIGHT_RATIOS:
            lg = (kr + nd).log()
            res = lg[:, None] - lg[None] - rr  # (D,D,P): dx1, dx2
            res = res - res.mean(-1, keepdim=True)
            err = (res ** 2).mean(-1)
            v, j = err.flatten().min(0)
            if float(v) < best[0]:
                i1, i2 = divmod(int(j), len(dirs))
                best = (float(v), (float(kr), float(dirs[i1]), float(dirs[i2])), res[i1, i2])
        r2s.append(1 - best[0] / var if var > 0 else float("nan"))
        params.append(best[1])
        residuals.append(best[2])
    return {"r2": r2s, "params": params, "residual": residuals}


@torch.no_grad()
def teacher_relighting(student: Student, synth_dir: str | Path, n_faces: int = 16, light_dx: float = 0.6,
                       inversion_steps: int = 60) -> dict[str, Any]:
    """Does the teacher reproduce how a face's shading changes with the light, beyond a convex blob?

    The student can learn nose, brow and eye sockets from shading only where the teacher's
    images carry them. For ``n_faces`` identities of ``synth_dir`` (undamaged, frontal, lit by
    :data:`RELIGHT_AMBIENT_DIFFUSE` from ``+light_dx`` and ``-light_dx``), the exact renders are
    inverted into the teacher (as ``bench shape`` inverts its faces), and the log-ratio image of
    each pair, the true one and the teacher's, is fitted by :func:`relighting_fit` with the true
    normals, the normals of the student's own depth prior (a convex blob) and those of the
    student's canonical depth of the inverted +dx image. Returns ``truth`` / ``teacher``: mean R2
    with ``true_normals``, ``prior`` and ``student`` (on the real pair the true normals explain
    nearly all, the prior less: the gap is the face's form; on the teacher's pair the student's
    normals can at best explain what the true normals explain there); ``form_corr``:
    mean correlation between the true and the teacher's residuals after the prior's fit (1: the
    teacher keeps all of the form beyond the blob, 0: none); ``psnr`` of the inversions inside
    the mask; the fitted horizontal directions with the true normals (``teacher_dx``: mean of
    ``(dx1 - dx2) / 2``, against the truth's ``truth_dx``)."""
    from digan.data.heads import undamaged
    from digan.data.synth import identity_backdrops, read_synth_config, render_views
    from digan.render.shading import normals_from_depth
    from digan.student.method import invert_teacher
    from evaluate.metrics.depth3d import erode_mask

    s, g = student, student.g3d
    p = Path(synth_dir).expanduser()
    data = _open_synth(p, g.size)
    if data.size != g.size:
        raise DiganError(f"synthetic faces are {data.size} px but the student renders {g.size} px; make the set with --size {g.size}")
    if n_faces < 3:
        raise DiganError(f"the relighting check needs at least 3 identities, got n_faces={n_faces}; ask for 3 or more")
    cfg = read_synth_config(p)
    ident = np.asarray(data.arrays["identity"])
    ids = [int(k) for k in dict.fromkeys(ident.tolist())][:n_faces]  # in the order they first appear
    n = len(ids)
    if n < 3:
        raise DiganError(f"the relighting check needs at least 3 identities, {p} holds {n}; make more with digan-bench data synth --n")
    params = [undamaged(data.identity_params(k)) for k in ids]
    backdrops = identity_backdrops(cfg, ident, ids)
    views = np.zeros((n, 6), np.float32)
    a, d = RELIGHT_AMBIENT_DIFFUSE
    pair = [render_views(params, views, np.tile(np.array([[a, d, sgn * light_dx, 0.0]], np.float32), (n, 1)), g.size,
                         fov=cfg.fov, supersample=cfg.supersample, backdrops=backdrops) for sgn in (1.0, -1.0)]
    true_img = torch.cat([pair[0]["image"], pair[1]["image"]]).to(s.device)
    with torch.enable_grad():
        wi = invert_teacher(s.teacher, true_img, g.w_std, inversion_steps)
    teach_img = s.teacher_image(wi).cpu()
    true_img = true_img.cpu()

    def log_grey(x: torch.Tensor) -> torch.Tensor:
        return (x.mean(1, keepdim=True) / 2 + 0.5).clamp(min=1e-3).log()

    mask = erode_mask(erode_mask(pair[0]["mask"] * pair[1]["mask"]))
    prior = _prior_depth(g, n)
    nkw = {"normalize": g.cfg.renderer.normal_norm}
    own = s.estimate(wi[:n]).depth.cpu()  # the student's canonical depth of each +dx image
    normals = {"true_normals": pair[0]["normal"], "prior": normals_from_depth(prior, g.cfg.renderer.fov, **nkw),
               "student": normals_from_depth(own, g.cfg.renderer.fov, **nkw)}
    out: dict[str, Any] = {"n_faces": n, "light_dx": float(light_dx), "inversion_steps": int(inversion_steps)}
    fits: dict[str, dict[str, Any]] = {}
    for name, img in (("truth", true_img), ("teacher", teach_img)):
        ratio = log_grey(img[:n]) - log_grey(img[n:])
        fits[name] = {k: relighting_fit(ratio, nrm, mask) for k, nrm in normals.items()}
        out[name] = {k: _mean(np.asarray(f["r2"])) for k, f in fits[name].items()}
        prm = np.asarray(fits[name]["true_normals"]["params"])
        out[f"{name}_dx"] = _mean((prm[:, 1] - prm[:, 2]) / 2)
    corr = []
    for rt, rg in zip(fits["truth"]["prior"]["residual"], fits["teacher"]["prior"]["residual"]):
        ok = rt.numel() > 2 and float(rt.std()) > 0 and float(rg.std()) > 0
        corr.append(float(np.corrcoef(rt.numpy(), rg.numpy())[0, 1]) if ok else float("nan"))
    out["form_corr"] = _mean(np.asarray(corr))
    m2 = torch.cat([mask, mask])
    out["psnr"] = _mean(masked_psnr(teach_img, true_img, m2))
    return out
