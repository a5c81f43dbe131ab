"""Scores of a restoration against ground truth, restricted to the restored region, and the
classical 2D inpainting reference (OpenCV Telea).

* :func:`psnr_region`: PSNR (dB) over the region's pixels and channels, images mapped to [0, 1].
* :func:`ssim_map` / :func:`ssim_region`: SSIM (Wang et al. 2004) with an 11x11 Gaussian window
  (sigma 1.5), ``C1 = 0.01^2``, ``C2 = 0.03^2`` on [0, 1] images, per channel, windows clipped at
  the image border ("valid" statistics are not used, so every pixel has a value); the map is
  averaged over channels and then over the region. The whole image enters each window, so the
  score of the region includes how well the fill joins its surroundings.
* :func:`depth_error_region`: mean ``|log d_pred + c - log d_true|`` over the region inside the
  true foreground, with the depth scale ``c`` aligned on the *undamaged* foreground (median of
  ``log d_true - log d_pred`` there), so a method is not charged for its global depth scale but is
  for the shape it puts into the damage.
* :func:`telea_inpaint`: ``cv2.inpaint(..., cv2.INPAINT_TELEA)`` on 8-bit RGB.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from digan.errors import DiganError

__all__ = ["psnr_region", "ssim_map", "ssim_region", "depth_error_region", "telea_inpaint", "TELEA_RADIUS"]

TELEA_RADIUS = 3


def _01(x: torch.Tensor) -> torch.Tensor:
    return (x.double().clamp(-1, 1) + 1) / 2


def psnr_region(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR in dB of (B,3,H,W) images in [-1, 1] over ``region`` (B,1,H,W); NaN for an
    empty region, +inf for an exact match."""
    m = (region > 0.5).double()
    se = ((_01(pred) - _01(target)) ** 2 * m).flatten(1).sum(1)
    cnt = m.flatten(1).sum(1) * pred.shape[1]
    mse = se / cnt
    return 10 * torch.log10(1.0 / mse)


def _gauss_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """(B,1,H,W) SSIM map of (B,C,H,W) images in [-1, 1] (module docstring), channel mean."""
    x, y = _01(a), _01(b)
    c = x.shape[1]
    g = _gauss_window(window, sigma).to(x.device)
    pad = window // 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        # normalised by the window weight inside the image: windows are clipped at the border
        k1 = g.view(1, 1, 1, -1).expand(t.shape[1], 1, 1, window)
        k2 = g.view(1, 1, -1, 1).expand(t.shape[1], 1, window, 1)
        t = F.conv2d(F.pad(t, (pad, pad, 0, 0)), k1, groups=t.shape[1])
        return F.conv2d(F.pad(t, (0, 0, pad, pad)), k2, groups=t.shape[1])

    ones = torch.ones_like(x[:, :1])
    wsum = blur(ones)
    mx, my = blur(x) / wsum, blur(y) / wsum
    sxx = blur(x * x) / wsum - mx * mx
    syy = blur(y * y) / wsum - my * my
    sxy = blur(x * y) / wsum - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean(1, keepdim=True) if c > 1 else s


def ssim_region(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """(B,) mean SSIM over ``region`` (B,1,H,W); NaN for an empty region."""
    m = (region > 0.5).double()
    s = ssim_map(pred, target)
    return (s * m).flatten(1).sum(1) / m.flatten(1).sum(1)


def depth_error_region(d_pred: torch.Tensor, d_true: torch.Tensor, region: torch.Tensor, fg_true: torch.Tensor,
                       fg_pred: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) mean scale-aligned absolute log-depth error over ``region & fg_true`` (module
    docstring); the scale is aligned on ``fg_true & ~region`` (and ``fg_pred`` when given).
    NaN where either set is empty."""
    r = (region > 0.5) & (fg_true > 0.5)
    known = (fg_true > 0.5) & (region < 0.5)
    if fg_pred is not None:
        known = known & (fg_pred > 0.5)
    lp = torch.log(d_pred.double().clamp_min(1e-6))
    lt = torch.log(d_true.double().clamp_min(1e-6))
    out = []
    for i in range(d_pred.shape[0]):
        if not bool(r[i].any()) or not bool(known[i].any()):
            out.append(torch.tensor(float("nan"), dtype=torch.float64))
            continue
        c = (lt[i][known[i]] - lp[i][known[i]]).median()
        out.append((lp[i][r[i]] + c - lt[i][r[i]]).abs().mean())
    return torch.stack(out)


def telea_inpaint(images: torch.Tensor, region: torch.Tensor, radius: int = TELEA_RADIUS) -> torch.Tensor:
    """OpenCV's Telea inpainting of ``region`` (B,1,H,W) in (B,3,H,W) images in [-1, 1]."""
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise DiganError("the Telea reference needs OpenCV: pip install opencv-python-headless") from e
    from digan.utils.images import to_uint8

    out = []
    for img, m in zip(images.detach().cpu(), region.detach().cpu()):
        a = np.ascontiguousarray(to_uint8(img))
        mk = ((m[0] > 0.5).numpy().astype(np.uint8)) * 255
        res = cv2.inpaint(a, mk, radius, cv2.INPAINT_TELEA)
        out.append(torch.from_numpy(res.astype(np.float32)).permute(2, 0, 1) / 127.5 - 1)
    return torch.stack(out).to(images.device)
