"""DIGAN's training losses, each a plain function so tests can compare it with a direct computation.

* :func:`photometric_loss` / :func:`image_loss`: L1 (+ ``lam_perc`` x perceptual) between the
  rendered image I_3D and the teacher image I_2D (masked mean when a mask is given).
* :func:`symmetric_reconstruction`: reconstruction of I_2D from the render and from the render of
  the horizontally flipped depth and albedo (Unsup3d/LiftedGAN symmetry prior):
  ``L = img(I, I_2D) + lam_flip * img(I_flip, I_2D)``.
* :func:`identity_loss`: squared distance of L2-normalised face embeddings of the canonical face
  G(w0) and a render at a sampled (perturbed) view, only over samples whose sampled |yaw| is below
  ``max_yaw`` (25 deg, LiftedGAN). Normalising the embeddings is our choice (recognition networks
  compare by cosine; ``||a - b||^2 = 2 - 2 cos`` for unit vectors).
* :func:`albedo_rank_loss`: nuclear norm of the B x HW matrix of filtered grey albedos: the
  paper's Laplacian filter (``filter="laplacian"``, default) or LiftedGAN's residual to a Gaussian
  blur (``filter="blur_residual"``); foreground-masked and average-pooled (4x) as in LiftedGAN.
* :func:`cycle_loss`: light/view cycle MSE (LiftedGAN's "perturb_param": the light and the three
  rotations DV/DL recover from M(w, L', V') must equal L', V').
* :func:`w_regularizer`: ``mean((w' - w_mean)^2) * 0.5 / mean(std(w))^2`` (LiftedGAN).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from digan.student.gradfilter import laplacian

__all__ = [
    "photometric_loss",
    "image_loss",
    "symmetric_reconstruction",
    "identity_loss",
    "albedo_rank_loss",
    "cycle_loss",
    "pose_anchor_loss",
    "landmark_parallax_loss",
    "w_regularizer",
    "gaussian_blur",
]


def photometric_loss(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute difference; with ``mask`` (B,1,H,W) the mean over masked pixels and channels."""
    d = (a - b).abs()
    if mask is None:
        return d.mean()
    m = mask.expand_as(d)
    return (d * m).sum() / m.sum().clamp(min=1e-8)


def image_loss(
    recon: torch.Tensor,
    target: torch.Tensor,
    perceptual: Callable[..., torch.Tensor] | None = None,
    lam_perc: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``L1(recon, target) + lam_perc * perceptual(recon, target)`` (perceptual skipped when None or 0)."""
    loss = photometric_loss(recon, target, mask)
    if perceptual is not None and lam_perc > 0:
        loss = loss + lam_perc * perceptual(recon, target, mask=mask)
    return loss


def symmetric_reconstruction(
    recon: torch.Tensor,
    recon_flip: torch.Tensor | None,
    target: torch.Tensor,
    perceptual: Callable[..., torch.Tensor] | None = None,
    lam_perc: float = 1.0,
    lam_flip: float = 0.8,
    mask: torch.Tensor | None = None,
    mask_flip: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``image_loss(recon) + lam_flip * image_loss(recon_flip)``; returns (total, {"rec", "flip"})."""
    rec = image_loss(recon, target, perceptual, lam_perc, mask)
    parts = {"rec": rec.detach()}
    total = rec
    if recon_flip is not None and lam_flip > 0:
        flip = image_loss(recon_flip, target, perceptual, lam_perc, mask_flip if mask_flip is not None else mask)
        parts["flip"] = flip.detach()
        total = total + lam_flip * flip
    return total, parts


def identity_loss(
    embed: Callable[[torch.Tensor], torch.Tensor],
    canonical: torch.Tensor,
    rendered: torch.Tensor,
    yaw_deg: torch.Tensor,
    max_yaw: float = 25.0,
) -> torch.Tensor:
    """Mean over samples with ``|yaw| < max_yaw`` of ``||e(canonical) - e(rendered)||^2`` (unit embeddings).

    Returns a zero that still depends on ``rendered`` when no sample qualifies (keeps DDP happy).
    """
    keep = yaw_deg.abs() < max_yaw
    if not bool(keep.any()):
        return rendered.sum() * 0.0
    e1 = F.normalize(embed(canonical[keep]), dim=1)
    e2 = F.normalize(embed(rendered[keep]), dim=1)
    return (e1 - e2).pow(2).sum(1).mean()


def gaussian_kernel(radius: int, sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised (2r+1)^2 Gaussian kernel ``exp(-d^2 / (2 sigma^2))``."""
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    k = g[:, None] * g[None, :]
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, radius: int, sigma: float, pad_mode: str = "reflect") -> torch.Tensor:
    """Per-channel Gaussian blur of (B,C,H,W); reflect padding (falls back to replicate when too small)."""
    if radius <= 0:
        return x
    c = x.shape[1]
    k = gaussian_kernel(radius, sigma, x.device, x.dtype).expand(c, 1, -1, -1)
    mode = pad_mode if (pad_mode != "reflect" or min(x.shape[-2:]) > radius) else "replicate"
    return F.conv2d(F.pad(x, (radius,) * 4, mode=mode), k, groups=c)


def albedo_rank_loss(
    albedo: torch.Tensor,
    mask: torch.Tensor | None = None,
    pool: int = 4,
    filter: str = "laplacian",
    blur_radius: int = 10,
    blur_sigma: float = 5.66,
) -> torch.Tensor:
    """Nuclear norm of the (B, H*W/pool^2) matrix of filtered, masked, pooled grey albedos.

    ``albedo`` (B,3,H,W) in [-1,1]; ``mask`` (B,1,H,W) foreground (1) or None.
    """
    grey = albedo.mean(1, keepdim=True)
    if filter == "laplacian":
        res = laplacian(grey)
    elif filter == "blur_residual":
        res = grey - gaussian_blur(grey, blur_radius, blur_sigma)
    else:
        raise ValueError(f"unknown albedo filter {filter!r}; use 'laplacian' or 'blur_residual'")
    if mask is not None:
        res = res * mask
    if pool and pool > 1:
        res = F.avg_pool2d(res, pool, stride=pool)
    return torch.linalg.matrix_norm(res.reshape(res.shape[0], -1), ord="nuc")


def cycle_loss(light_pred: torch.Tensor, light_target: torch.Tensor, view_pred: torch.Tensor, view_target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(MSE over the 4 raw light units, MSE over the 3 raw rotation units) (LiftedGAN)."""
    return (light_pred - light_target).pow(2).mean(), (view_pred - view_target)[:, :3].pow(2).mean()


def pose_anchor_loss(pred: torch.Tensor, target: torch.Tensor, weights: tuple[float, float]) -> torch.Tensor:
    """``sum_j weights[j] * mean_i (pred[i,j] - target[i,j])^2`` over the rows i whose target is
    finite (a face the detector missed is NaN and left out); (B,2) raw (pitch, yaw) units
    (``loss.pose_anchor_pitch``, ``loss.pose_anchor``). Zero, still on ``pred``'s graph, when no
    row has a target."""
    ok = torch.isfinite(target)
    err = torch.where(ok, pred - torch.nan_to_num(target), torch.zeros_like(pred)).pow(2)
    per_axis = err.sum(0) / ok.sum(0).clamp(min=1)
    return (per_axis * torch.tensor(weights, dtype=pred.dtype, device=pred.device)).sum()


def landmark_parallax_loss(grid: torch.Tensor, mask: torch.Tensor, kps: torch.Tensor) -> torch.Tensor:
    """Where a face's 5 landmarks land on its canonical surface (``loss.landmark_parallax``).

    ``grid`` (B,S,S,2): the canonical (x, y) in [-1, 1] each view pixel shows (a render's
    ``RenderResult.grid``); ``mask`` (B,1,S,S) its coverage; ``kps`` (B,5,2): the detected
    left eye, right eye, nose tip, left and right mouth corner of the image the render explains,
    in its pixels (pixel i spans [i, i+1)), NaN where no face was found. Each landmark is carried
    back to the canonical frame by sampling ``grid`` there (bilinear, differentiable w.r.t. the
    depth through the rasterizer's barycentrics). In the canonical frame a face is frontal, so
    its nose tip and the eyes' midpoint share one x: the loss is the mean Huber distance (1 px)
    in canonical pixels of the nose tip's x from the eyes' midpoint, over the faces whose 5
    landmarks all land on the surface. A depth whose nose stands out too little (too much)
    carries a turned face's nose back beside (across) the midline, by about the missing relief
    times the tangent of the yaw. The mouth corners are not used: with the true depth and view
    of the synthetic tuning heads, the detector's mouth midpoint lies 0.95 px to one side of the
    nose tip on average, the eyes' midpoint 0.01 px. Zero, still on ``grid``'s graph, when no
    face counts."""
    s = grid.shape[1]
    ok = torch.isfinite(kps).all(-1).all(-1)
    pts = (torch.nan_to_num(kps).to(grid.dtype) - 0.5) / (s - 1) * 2 - 1  # align_corners=True
    pts = pts.unsqueeze(1)  # (B,1,5,2)
    xy = F.grid_sample(grid.permute(0, 3, 1, 2), pts, mode="bilinear", padding_mode="border", align_corners=True)[:, :, 0]
    cov = F.grid_sample(mask.to(grid.dtype), pts, mode="bilinear", padding_mode="zeros", align_corners=True)[:, 0, 0]
    ok = ok & (cov > 0.999).all(-1)
    x = xy[:, 0] * (s - 1) / 2  # (B,5) canonical px
    nose = x[:, 2]
    err = torch.where(ok, nose - (x[:, 0] + x[:, 1]) / 2, torch.zeros_like(nose))
    per = F.smooth_l1_loss(err, torch.zeros_like(err), reduction="none", beta=1.0)
    return per.sum() / ok.sum().clamp(min=1)


def w_regularizer(w: torch.Tensor, w_mean: torch.Tensor, w_sigma_inv: float | torch.Tensor) -> torch.Tensor:
    """``mean((w - w_mean)^2) * w_sigma_inv`` with ``w_sigma_inv = 0.5 / mean(std(w))^2``."""
    return (w - w_mean).pow(2).mean() * w_sigma_inv
