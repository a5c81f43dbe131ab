"""Shape diagnostics of a trained student on synthetic heads with known 3D (``digan-bench bench shape``).

SIDE/MAD alone do not say *why* a student fails to recover shape. This report separates the
usual failure modes of 3D lifting on a set made by ``digan-bench data synth``:

* **pose**: each image is inverted into the teacher (as the ``digan`` method's ``reconstruct``
  does) and DV's yaw is compared with the true yaw: Pearson correlation and least-squares slope
  (1 is perfect; near 0: the pose stays in the texture; negative: the hollow-face solution,
  where a concave face turned the other way explains the image);
* **neutral code**: asymmetry ``mean |G(w0) - mirror(G(w0))|`` of the canonical face next to
  that of the teacher's own images (a canonical face as asymmetric as the input is not frontal);
* **light**: mean ambient and diffuse strength and the spread of the light direction (a
  collapsed diffuse term means shading carries no shape information);
* **relief**: masked standard deviation of the canonical depth (scene units);
* **3D error**: SIDE and MAD (Unsup3d protocol, :mod:`evaluate.metrics.depth3d`) of the
  reconstructions, with three references on the same images and masks: a flat plane, the
  model's own depth prior alone (``model.depth_prior``, frontal), and the reconstruction with
  its relief inverted about its mean (lower than the reconstruction = hollow faces).

All numbers come from fixed seeds; the report is a JSON-ready dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from digan.errors import DiganError
from digan.student.inference import Student

__all__ = ["pose_agreement", "masked_std", "shape_diagnostics"]


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


def shape_diagnostics(student: Student, synth_dir: str | Path, n_faces: int = 24, inversion_steps: int = 60,
                      n_samples: int = 64, seed: int = 123) -> dict[str, Any]:
    """The report described in the module docstring, for ``n_faces`` images of ``synth_dir``
    (inverted with ``inversion_steps`` steps) and ``n_samples`` teacher samples of ``seed``."""
    from digan.data.synthetic import load_synth
    from digan.student.method import invert_teacher
    from evaluate.metrics.depth3d import flat_plane_errors

    s, g = student, student.g3d
    out: dict[str, Any] = {"n_faces": 0, "n_samples": n_samples, "inversion_steps": inversion_steps, "seed": seed}
    w = s.style(s.latents(n_samples, seed=seed))
    est = s.estimate(w)
    teacher_img = s.teacher_image(w)
    fg = g.foreground(est.depth)
    out["light"] = {"ambient": float(est.light.ambient.mean()), "diffuse": float(est.light.diffuse.mean()),
                    "direction_std": [float(v) for v in est.light.direction.std(0)]}
    out["relief_std"] = float(masked_std(est.depth, fg).mean())
    out["asymmetry"] = {"canonical": _asym(est.canonical.clamp(-1, 1)), "teacher": _asym(teacher_img)}

    data = load_synth(synth_dir)
    n = min(int(n_faces), len(data))
    if n < 3:
        raise DiganError(f"the shape report needs at least 3 faces, got {n} ({synth_dir} holds {len(data)}); raise --n-faces or make more with digan-bench data synth")
    items = [data[i] for i in range(n)]
    gt = {k: torch.stack([it[k] for it in items]).float() for k in ("image", "depth", "normal", "mask")}
    true_yaw = np.array([float(it["rotation"][1]) for it in items])
    imgs = gt["image"].to(s.device)
    if imgs.shape[-1] != g.size:
        raise DiganError(f"synthetic faces are {imgs.shape[-1]} px but the student renders {g.size} px; make the set with --size {g.size}")
    with torch.enable_grad():
        wi = invert_teacher(s.teacher, imgs, g.w_std, inversion_steps)
    e2 = s.estimate(wi)
    rend = g.render(e2, s.renderer, filter_grads=False, extra=g.foreground(e2.depth))
    mask = ((rend.extra > 0.5).float() * rend.mask).cpu()
    depth = rend.depth.cpu()
    out["n_faces"] = n
    out["pose"] = pose_agreement(e2.view.rotation[:, 1].cpu().numpy(), true_yaw)
    out["pose"]["true_yaw_std"] = float(true_yaw.std())
    out["reconstruction_l1"] = float((rend.image.clamp(-1, 1) - imgs).abs().mean())
    out["teacher_inversion_l1"] = float((s.teacher_image(wi) - imgs).abs().mean())
    out["student"] = _scores(depth, mask, gt)
    from evaluate.methods import Rendered

    fs, fm, _ = flat_plane_errors(Rendered(image=gt["image"], depth=depth, normal=None, mask=mask), gt)
    out["flat_plane"] = {"side": float(np.nanmean(fs.numpy())), "mad": float(np.nanmean(fm.numpy()))}
    prior = g.depth_from_raw(torch.zeros_like(g.prior)).cpu().expand(n, -1, -1, -1)
    out["prior_only"] = _scores(prior, g.foreground(prior), gt)
    m = mask > 0.5
    mu = (depth * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp(min=1)
    out["inverted_relief"] = _scores(torch.where(m, 2 * mu.view(-1, 1, 1, 1) - depth, depth), mask, gt)
    return out
