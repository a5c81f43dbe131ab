"""Differentiable augmentation for training the teacher on small data sets.

Two choices (config ``augment.kind``), both applied to every image the discriminator sees (real
and fake, in the D and the G step) and differentiable so that G learns through them:

* ``"ada"`` (default): an ADA-style pipeline (Karras et al. 2020, "bgc") whose probability ``p``
  adapts to D's overfitting. Every transform is applied to each image independently with
  probability ``p``: x-flip, 90-degree rotation, integer translation (up to 1/8 of the size),
  isotropic scaling (log2-normal, std 0.2), arbitrary rotation, anisotropic scaling (std 0.2),
  fractional translation (std 1/8), brightness (N(0, 0.2)), contrast (log2-normal, std 0.5),
  luma flip, hue rotation (uniform), saturation (log2-normal, std 1). The geometric part is
  composed into one affine matrix and applied with bilinear ``grid_sample`` and reflection
  padding (ADA uses reflection padding plus a wavelet anti-aliasing filter; we skip that filter).
  The overfitting heuristic r_t = E[sign(D(real))] is measured over ``ada_interval`` D steps and
  ``p`` moves by ``sign(r_t - target) * images / (ada_kimg * 1000)`` (``ada_kimg``: images
  for p to go from 0 to 1), clamped to [0, 1). With ``ada_target <= 0``, ``p`` stays fixed.
* ``"diffaugment"``: DiffAugment (Zhao et al. 2020) with ``policy`` from colour (brightness,
  saturation, contrast), translation (1/8, zero padding) and cutout (half-size square), applied to
  every image (no probability).
* ``"none"``.

All randomness comes from the global torch RNG of the image's device, so a resumed run with the
restored RNG state is bit-exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from digan.errors import DiganError

__all__ = ["AugmentConfig", "Augment", "diff_augment", "ada_augment"]


@dataclass
class AugmentConfig:
    """Discriminator augmentation (see module docstring)."""

    kind: Literal["ada", "diffaugment", "none"] = "ada"
    p: float = 0.0                  # initial ADA probability (the fixed one when ada_target <= 0)
    ada_target: float = 0.6         # target for r_t = E[sign(D(real))]
    ada_kimg: float = 100.0         # thousands of images for p to move from 0 to 1
    ada_interval: int = 4           # D steps between p updates
    policy: str = "color,translation,cutout"  # DiffAugment policy


# ---------------------------------------------------------------------------------------------
# DiffAugment
# ---------------------------------------------------------------------------------------------

def _brightness(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)


def _saturation(x: torch.Tensor) -> torch.Tensor:
    m = x.mean(dim=1, keepdim=True)
    return (x - m) * (torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + m


def _contrast(x: torch.Tensor) -> torch.Tensor:
    m = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - m) * (torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + m


def _translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device)
    tx = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gy = torch.clamp(gy[None] + ty + 1, 0, h + 1)
    gx = torch.clamp(gx[None] + tx + 1, 0, w + 1)
    xp = F.pad(x, [1, 1, 1, 1])  # zero border: shifted-in pixels are 0 (mid grey)
    idx = (gy * (w + 2) + gx).view(b, 1, h * w).expand(-1, x.shape[1], -1)
    return xp.flatten(2).gather(2, idx).view_as(x)


def _cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    y0, x0 = oy - ch // 2, ox - cw // 2  # the square may stick out of the image (clipped)
    inside = (gy[None] >= y0) & (gy[None] < y0 + ch) & (gx[None] >= x0) & (gx[None] < x0 + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


_POLICIES = {"color": [_brightness, _saturation, _contrast], "translation": [_translation], "cutout": [_cutout]}


def diff_augment(x: torch.Tensor, policy: str = "color,translation,cutout") -> torch.Tensor:
    """DiffAugment: every op in ``policy`` applied to every image."""
    for name in [p.strip() for p in policy.split(",") if p.strip()]:
        if name not in _POLICIES:
            raise DiganError(f"unknown DiffAugment policy '{name}'; choose from {', '.join(_POLICIES)}")
        for f in _POLICIES[name]:
            x = f(x)
    return x


# ---------------------------------------------------------------------------------------------
# ADA-style pipeline
# ---------------------------------------------------------------------------------------------

def _gate(b: int, p: float, device, dtype) -> torch.Tensor:
    """1 where the transform applies (probability p), else 0; shape (B,)."""
    return (torch.rand(b, device=device) < p).to(dtype)


def _mat(b: int, device, dtype) -> torch.Tensor:
    return torch.eye(3, device=device, dtype=dtype).expand(b, 3, 3).clone()


def _scale2(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = _mat(sx.shape[0], sx.device, sx.dtype)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def _rot2(theta: torch.Tensor) -> torch.Tensor:
    m = _mat(theta.shape[0], theta.device, theta.dtype)
    c, s = torch.cos(theta), torch.sin(theta)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


def _trans2(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = _mat(tx.shape[0], tx.device, tx.dtype)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def ada_augment(x: torch.Tensor, p: float) -> torch.Tensor:
    """ADA-style geometric + colour augmentation with per-image probability ``p`` (see module)."""
    if p <= 0:
        return x
    b, c, h, w = x.shape
    dev, dt = x.device, x.dtype
    # geometric: matrix in normalised coordinates [-1, 1] mapping output -> input
    g = _mat(b, dev, dt)
    on = _gate(b, p, dev, dt)
    g = g @ _scale2(1 - 2 * on * torch.randint(0, 2, (b,), device=dev).to(dt), torch.ones(b, device=dev, dtype=dt))
    on = _gate(b, p, dev, dt)
    g = g @ _rot2(on * torch.randint(0, 4, (b,), device=dev).to(dt) * (math.pi / 2))
    on = _gate(b, p, dev, dt)
    t = (torch.rand(b, 2, device=dev, dtype=dt) * 2 - 1) * 0.125
    tx = torch.round(t[:, 0] * w) / w * 2
    ty = torch.round(t[:, 1] * h) / h * 2
    g = g @ _trans2(on * tx, on * ty)
    on = _gate(b, p, dev, dt)
    s = torch.exp2(torch.randn(b, device=dev, dtype=dt) * 0.2 * on)
    g = g @ _scale2(s, s)
    p_rot = 1 - math.sqrt(max(0.0, 1 - p))  # applied twice, as in ADA, so the total is about p
    on = _gate(b, p_rot, dev, dt)
    g = g @ _rot2(on * (torch.rand(b, device=dev, dtype=dt) * 2 - 1) * math.pi)
    on = _gate(b, p, dev, dt)
    s = torch.exp2(torch.randn(b, device=dev, dtype=dt) * 0.2 * on)
    g = g @ _scale2(s, 1 / s)
    on = _gate(b, p_rot, dev, dt)
    g = g @ _rot2(on * (torch.rand(b, device=dev, dtype=dt) * 2 - 1) * math.pi)
    on = _gate(b, p, dev, dt)
    t = torch.randn(b, 2, device=dev, dtype=dt) * 0.125 * 2
    g = g @ _trans2(on * t[:, 0], on * t[:, 1])
    eye = torch.eye(3, device=dev, dtype=dt)
    if not torch.equal(g, eye.expand_as(g)):
        grid = F.affine_grid(g[:, :2, :], [b, c, h, w], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    # colour: 4x4 matrix acting on homogeneous RGB
    cm = torch.eye(4, device=dev, dtype=dt).expand(b, 4, 4).clone()
    v = torch.tensor([1.0, 1.0, 1.0, 0.0], device=dev, dtype=dt) / math.sqrt(3)  # luma axis
    on = _gate(b, p, dev, dt)
    bright = torch.randn(b, device=dev, dtype=dt) * 0.2 * on
    tm = torch.eye(4, device=dev, dtype=dt).expand(b, 4, 4).clone()
    tm[:, :3, 3] = bright[:, None]
    cm = tm @ cm
    on = _gate(b, p, dev, dt)
    con = torch.exp2(torch.randn(b, device=dev, dtype=dt) * 0.5 * on)
    sm = torch.eye(4, device=dev, dtype=dt).expand(b, 4, 4).clone()
    sm[:, 0, 0], sm[:, 1, 1], sm[:, 2, 2] = con, con, con
    cm = sm @ cm
    vv = torch.outer(v, v)
    on = _gate(b, p, dev, dt)
    flip = torch.randint(0, 2, (b,), device=dev).to(dt) * on
    cm = (torch.eye(4, device=dev, dtype=dt) - 2 * vv * flip.view(b, 1, 1)) @ cm
    on = _gate(b, p, dev, dt)
    theta = (torch.rand(b, device=dev, dtype=dt) * 2 - 1) * math.pi * on
    cm = _rot3_axis(v[:3], theta) @ cm
    on = _gate(b, p, dev, dt)
    sat = torch.exp2(torch.randn(b, device=dev, dtype=dt) * 1.0 * on)
    cm = (vv + (torch.eye(4, device=dev, dtype=dt) - vv) * sat.view(b, 1, 1)) @ cm
    if not torch.equal(cm, torch.eye(4, device=dev, dtype=dt).expand_as(cm)):
        x = (cm[:, :3, :3] @ x.reshape(b, c, h * w) + cm[:, :3, 3:]).reshape(b, c, h, w)
    return x


def _rot3_axis(axis: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Batch of 4x4 homogeneous rotations by ``theta`` about the unit 3-vector ``axis``."""
    b = theta.shape[0]
    x, y, z = axis
    k = torch.stack([torch.stack([0 * x, -z, y]), torch.stack([z, 0 * x, -x]), torch.stack([-y, x, 0 * x])])
    eye = torch.eye(3, device=theta.device, dtype=theta.dtype)
    s, c = torch.sin(theta).view(b, 1, 1), torch.cos(theta).view(b, 1, 1)
    r = eye + s * k + (1 - c) * (k @ k)
    m = torch.eye(4, device=theta.device, dtype=theta.dtype).expand(b, 4, 4).clone()
    m[:, :3, :3] = r
    return m


# ---------------------------------------------------------------------------------------------
# the stateful wrapper used by the trainer
# ---------------------------------------------------------------------------------------------

class Augment:
    """Applies the configured augmentation and adapts ADA's ``p`` (state: ``p``, accumulators)."""

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg
        if cfg.kind == "diffaugment":
            diff_augment(torch.zeros(1, 3, 4, 4), cfg.policy)  # validate the policy early
        self.p = float(cfg.p)
        self._sign_sum = 0.0
        self._count = 0
        self._steps = 0

    @property
    def adaptive(self) -> bool:
        return self.cfg.kind == "ada" and self.cfg.ada_target > 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.kind == "ada":
            return ada_augment(x, self.p)
        if self.cfg.kind == "diffaugment":
            return diff_augment(x, self.cfg.policy)
        return x

    def accumulate(self, real_pred: torch.Tensor) -> None:
        """Record sign(D(real)) of one D step (call once per step)."""
        if self.adaptive:
            self._sign_sum += float(torch.sign(real_pred.detach()).sum())
            self._count += real_pred.shape[0]

    def update(self, images_per_step: int, reduce=None) -> None:
        """After each D step: every ``ada_interval`` steps move ``p`` towards the target.

        ``reduce`` sums (sign_sum, count) over processes under DDP.
        """
        if not self.adaptive:
            return
        self._steps += 1
        if self._steps % self.cfg.ada_interval:
            return
        s, n = self._sign_sum, self._count
        if reduce is not None:
            s, n = reduce(s, n)
        if n > 0:
            rt = s / n
            adjust = math.copysign(1.0, rt - self.cfg.ada_target) * images_per_step * self.cfg.ada_interval / (self.cfg.ada_kimg * 1000)
            self.p = min(max(self.p + adjust, 0.0), 1.0 - 1e-6)
            self.last_rt = rt
        self._sign_sum, self._count = 0.0, 0

    def state_dict(self) -> dict:
        return {"p": self.p, "sign_sum": self._sign_sum, "count": self._count, "steps": self._steps}

    def load_state_dict(self, st: dict) -> None:
        self.p = float(st.get("p", self.cfg.p))
        self._sign_sum = float(st.get("sign_sum", 0.0))
        self._count = int(st.get("count", 0))
        self._steps = int(st.get("steps", 0))
