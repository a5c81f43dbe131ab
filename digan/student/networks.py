"""DIGAN's sub-networks: DV (view), DL (light), DS (depth), DT (transformation map) and the compose
network M. Each is switchable by config (KAN vs plain MLP, partial vs plain convolution) so that
the ablations and the LiftGAN baseline reuse them.

Shapes (B = batch, D = style dimension of the teacher, S = image size, a power of two >= 16):

* :class:`ViewNet` (DV): w (B,D) -> raw view (B,6) in [-1,1] (tanh), ordered
  (rx=pitch, ry=yaw, rz=roll, tx, ty, tz); :meth:`ViewNet.to_view` scales it to a
  :class:`~digan.render.types.View`: rotations x ``rotation_range`` (60 deg), tx/ty x
  ``xy_translation_range`` (0.1), tz x ``z_translation_range`` (0.01, LiftedGAN's value).
* :class:`LightNet` (DL): w (B,D) -> raw light (B,4) in [-1,1], ordered (ambient, diffuse, dx, dy);
  :meth:`LightNet.to_light` maps ambient and diffuse to [0, 1] (``x/2 + 0.5``, Unsup3d/LiftedGAN)
  and keeps dx, dy in [-1, 1] (direction ``normalize(dx, dy, 1)``, up to 45 deg off-axis).
* :class:`DepthNet` (DS): (w0 (B,D), x2 (B,C2,S,S)) -> raw depth (B,1,S,S) (unbounded; the G3D
  assembly applies ``tanh(raw - mean)`` and maps it to [0.9, 1.1]).
* :class:`TransformNet` (DT): w0 (B,D) -> raw transformation map (B,1,S,S) (G3D applies
  ``sigmoid(raw + 5)``).
* :class:`ComposeNet` (M): (w (B,D), raw light (B,4), raw view (B,6)) -> w0 (B,D).
* :class:`ImageReader` (R, ``loss.cycle_image`` / ``loss.perturb_view=image`` only; not in the
  paper or LiftedGAN): image (B,3,S,S) -> raw (pitch, yaw, roll) (B,3) and raw light (B,4),
  tanh units as DV/DL.

Structure (the paper's text; LiftedGAN where the paper is vague):

* DV/DL: ``[KANLinear -> GroupNorm -> LeakyReLU(0.2)] x (n-1) -> KANLinear -> tanh`` (paper);
  with ``use_kan=False`` every KANLinear becomes ``nn.Linear`` (LiftedGAN's StyleDecomposeNet,
  the ``mlp`` ablation). The input w is standardised first with the teacher's per-dimension
  mean and twice its standard deviation (buffers set by :meth:`set_input_stats`), because the spline branch
  of a KAN layer only lives on its grid [-1, 1] (+- 3 knots); raw w of StyleGAN2 spans tens of units.
  Hidden width 256 by default (LiftedGAN's plain MLP uses 512; a KAN edge has ~10 parameters).
* DS (paper): optional MLP (``n_mlp`` x Linear + LeakyReLU to ``z_dim``), ConvTranspose2d 1->4
  px + ReLU + partial conv + ReLU, then ``n_up`` blocks (GroupNorm, ConvTranspose2d x2, ReLU,
  GroupNorm, partial conv 3x3, ReLU), nearest x2 upsampling, plus a 1x1 "inject" conv of x2 (the
  teacher's last feature map), then the head (GroupNorm, partial conv 3x3, ReLU, GroupNorm,
  Conv2d 5x5, ReLU, output Conv2d 5x5 with bias). The output conv is zero-initialised by default
  (``zero_init``, our choice, on in the config by default): training starts from a flat depth map, so the first renders are
  the canonical image instead of the streaks a random depth field produces, which matters for
  short (CPU) training runs. ``n_up = log2(S) - 3`` (5 at 256 px, as in the
  paper); channels start at ``nf * 2**n_up`` and halve per block down to ``nf``. GroupNorm uses
  groups of 4 channels (LiftedGAN). Convs the paper calls "partial" are :class:`PartialConv2d`
  with an all-ones mask (``plain_conv`` ablation: ``nn.Conv2d``).
* DT (paper = LiftedGAN): optional MLP to ``z_dim`` (16), ConvTranspose2d 1->4 px + ReLU,
  ``n_up`` blocks of (ConvTranspose2d x2, GroupNorm, ReLU), nearest x2 upsampling, Conv2d 3x3,
  GroupNorm, ReLU, output Conv2d 5x5.
* M (LiftedGAN's StyleComposeNet): three 4-layer MLP embedders (style, light, view) with GroupNorm
  and a learnable per-channel scale/shift at their end, summed, then a 4-layer MLP with GroupNorm.
  Optional ``residual`` mode (our addition, off by default): ``w0 = w + M(...)`` with the last
  layer zero-initialised, so that training starts from ``w0 = w``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from digan.render.types import Light, View
from digan.student.kan import KANLinear
from digan.student.partialconv import conv2d_layer

__all__ = [
    "group_norm",
    "ScaleShift",
    "make_mlp",
    "ViewNet",
    "LightNet",
    "DepthNet",
    "TransformNet",
    "ComposeNet",
    "ImageReader",
    "n_upsampling_blocks",
]


def group_norm(c: int) -> nn.GroupNorm:
    """GroupNorm with groups of 4 channels (LiftedGAN), at least one group."""
    return nn.GroupNorm(max(1, c // 4), c)


def n_upsampling_blocks(size: int) -> int:
    """Number of x2 blocks between the 4x4 seed and the final x2 upsampling: ``log2(size) - 3``."""
    n = int(round(math.log2(size)))
    if 2**n != size or size < 16:
        raise ValueError(f"image size {size} must be a power of two >= 16")
    return n - 3


class ScaleShift(nn.Module):
    """Learnable per-feature ``x * scale + shift`` (init 1 and 0)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, dim))
        self.bias = nn.Parameter(torch.zeros(1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight + self.bias


def _linear(cin: int, cout: int, kan: bool, kan_kwargs: dict | None) -> nn.Module:
    if kan:
        return KANLinear(cin, cout, **(kan_kwargs or {}))
    return nn.Linear(cin, cout)


def make_mlp(
    cin: int,
    cout: int,
    n_layers: int = 4,
    hidden: int = 256,
    kan: bool = False,
    norm: bool = True,
    out_act: nn.Module | None = None,
    kan_kwargs: dict | None = None,
) -> nn.Sequential:
    """``[Linear|KAN -> GroupNorm? -> LeakyReLU(0.2)] x (n_layers-1) -> Linear|KAN -> out_act?``."""
    layers: list[nn.Module] = []
    d = cin
    for _ in range(n_layers - 1):
        layers.append(_linear(d, hidden, kan, kan_kwargs))
        if norm:
            layers.append(group_norm(hidden))
        layers.append(nn.LeakyReLU(0.2))
        d = hidden
    layers.append(_linear(d, cout, kan, kan_kwargs))
    if out_act is not None:
        layers.append(out_act)
    return nn.Sequential(*layers)


class _StyleRegressor(nn.Module):
    """Standardise w with teacher statistics, then an MLP/KAN with tanh output.

    ``norm=False`` drops the hidden GroupNorms and ``standardize=False`` feeds raw w: together
    with ``use_kan=False`` this is LiftedGAN's plain ``MLP`` (Linear + LeakyReLU(0.2), tanh), whose
    parameters are ``net.{0,2,4,...}`` as in LiftedGAN's ``mlp.{0,2,4,...}``.
    """

    def __init__(self, style_dim: int, out_dim: int, n_layers: int, hidden: int, use_kan: bool, kan_kwargs: dict | None,
                 norm: bool = True, standardize: bool = True):
        super().__init__()
        self.standardize = standardize
        self.register_buffer("w_mean", torch.zeros(style_dim))
        self.register_buffer("w_std", torch.ones(style_dim))
        self.net = make_mlp(style_dim, out_dim, n_layers, hidden, kan=use_kan, norm=norm, out_act=nn.Tanh(), kan_kwargs=kan_kwargs)

    @torch.no_grad()
    def set_input_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-dimension mean/std of the teacher's w (std clamped to >= 1e-3 of its mean)."""
        std = std.reshape(-1).to(self.w_std)
        self.w_mean.copy_(mean.reshape(-1).to(self.w_mean))
        self.w_std.copy_(std.clamp(min=1e-3 * float(std.mean().clamp(min=1e-8))))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.net(self.standardise(w))

    def standardise(self, w: torch.Tensor) -> torch.Tensor:
        """``(w - mean) / (2 std)``: ~95% of the teacher's w land on the KAN grid [-1, 1] (w itself
        when built with ``standardize=False``)."""
        if not self.standardize:
            return w
        return (w - self.w_mean) / (2.0 * self.w_std)


class ViewNet(_StyleRegressor):
    """DV: style code w (B,D) -> raw view (B,6) in [-1,1]: (rx, ry, rz, tx, ty, tz)."""

    def __init__(
        self,
        style_dim: int,
        n_layers: int = 4,
        hidden: int = 256,
        use_kan: bool = True,
        kan_kwargs: dict | None = None,
        rotation_range: float = 60.0,
        xy_translation_range: float = 0.1,
        z_translation_range: float = 0.01,
        norm: bool = True,
        standardize: bool = True,
    ):
        super().__init__(style_dim, 6, n_layers, hidden, use_kan, kan_kwargs, norm, standardize)
        self.rotation_range = rotation_range
        self.xy_translation_range = xy_translation_range
        self.z_translation_range = z_translation_range

    def scale(self) -> torch.Tensor:
        """(6,) factors from raw units to (deg, deg, deg, tx, ty, tz)."""
        r, t, tz = self.rotation_range, self.xy_translation_range, self.z_translation_range
        return torch.tensor([r, r, r, t, t, tz])

    def to_view(self, raw: torch.Tensor) -> View:
        """Raw (B,6) in [-1,1] -> :class:`View` in degrees and scene units."""
        v = raw * self.scale().to(raw)
        return View(rotation=v[:, :3], translation=v[:, 3:])

    def from_view(self, view: View) -> torch.Tensor:
        """Inverse of :meth:`to_view`: a :class:`View` -> raw (B,6) units."""
        v = torch.cat([view.rotation, view.translation], 1)
        return v / self.scale().to(v)


class LightNet(_StyleRegressor):
    """DL: style code w (B,D) -> raw light (B,4) in [-1,1]: (ambient, diffuse, dx, dy)."""

    def __init__(self, style_dim: int, n_layers: int = 4, hidden: int = 256, use_kan: bool = True, kan_kwargs: dict | None = None,
                 norm: bool = True, standardize: bool = True, diffuse_range: tuple[float, float] = (0.0, 1.0), vertical: bool = True):
        super().__init__(style_dim, 4, n_layers, hidden, use_kan, kan_kwargs, norm, standardize)
        lo, hi = (float(v) for v in diffuse_range)
        if not 0.0 <= lo < hi:
            raise ValueError(f"diffuse_range must satisfy 0 <= low < high, got {diffuse_range}")
        self.diffuse_range = (lo, hi)
        # False: the light direction has no vertical part (dy = 0 whatever the raw output)
        self.vertical = bool(vertical)

    def to_light(self, raw: torch.Tensor) -> Light:
        """Raw (B,4) -> :class:`Light`: ambient in [0,1], diffuse in ``diffuse_range`` ([0,1] by
        default: ``x/2 + 0.5`` as Unsup3d/LiftedGAN), direction (dx, dy) in [-1,1] (dy = 0 when
        built with ``vertical=False``)."""
        lo, hi = self.diffuse_range
        direction = raw[:, 2:4] if self.vertical else torch.stack([raw[:, 2], torch.zeros_like(raw[:, 3])], 1)
        return Light(ambient=raw[:, 0] / 2 + 0.5, diffuse=lo + (hi - lo) * (raw[:, 1] / 2 + 0.5), direction=direction)

    def from_light(self, light: Light) -> torch.Tensor:
        """Inverse of :meth:`to_light`."""
        lo, hi = self.diffuse_range
        return torch.cat([(light.ambient[:, None] - 0.5) * 2, ((light.diffuse[:, None] - lo) / (hi - lo) - 0.5) * 2, light.direction], 1)


def _latent_mlp(in_dim: int, z_dim: int, n_mlp: int) -> nn.Module | None:
    if n_mlp <= 0:
        return None
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(n_mlp):
        layers += [nn.Linear(d, z_dim), nn.LeakyReLU(0.2)]
        d = z_dim
    return nn.Sequential(*layers)


class DepthNet(nn.Module):
    """DS: (w0 (B,D), x2 (B,inject_dim,S,S)) -> raw depth (B,1,S,S); see module docstring.

    ``norm_order="pre"`` (DIGAN, default): GroupNorm before each convolution of a block and of the
    head. ``"post"``: LiftedGAN's ``DepthNet`` order, convolution -> GroupNorm -> ReLU, i.e. blocks
    (ConvTranspose2d, GN, ReLU, conv 3x3, GN, ReLU) and head (conv 3x3, GN, ReLU, conv 5x5, GN,
    ReLU, conv 5x5 + bias); the module indices then equal LiftedGAN's ``network.*`` / ``head.*``.
    """

    def __init__(
        self,
        style_dim: int,
        size: int,
        inject_dim: int = 0,
        z_dim: int = 512,
        nf: int = 16,
        n_mlp: int = 4,
        partial: bool = True,
        norm_order: str = "pre",
        zero_init: bool = False,
    ):
        super().__init__()
        if norm_order not in ("pre", "post"):
            raise ValueError(f"norm_order must be 'pre' or 'post', got {norm_order!r}")
        self.size = size
        n_up = n_upsampling_blocks(size)
        self.mlp = _latent_mlp(style_dim, z_dim, n_mlp)
        zin = z_dim if n_mlp > 0 else style_dim
        nd = nf * 2**n_up
        post = norm_order == "post"
        net: list[nn.Module] = [
            nn.ConvTranspose2d(zin, nd, kernel_size=4, stride=1, padding=0, bias=False),
            nn.ReLU(),
            conv2d_layer(partial, nd, nd, 3, 1),
            nn.ReLU(),
        ]
        for _ in range(n_up):
            up = nn.ConvTranspose2d(nd, nd // 2, kernel_size=4, stride=2, padding=1, bias=False)
            conv = conv2d_layer(partial, nd // 2, nd // 2, 3, 1)
            if post:
                net += [up, group_norm(nd // 2), nn.ReLU(), conv, group_norm(nd // 2), nn.ReLU()]
            else:
                net += [group_norm(nd), up, nn.ReLU(), group_norm(nd // 2), conv, nn.ReLU()]
            nd //= 2
        net.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.network = nn.Sequential(*net)
        self.inject = nn.Conv2d(inject_dim, nd, kernel_size=1, bias=False) if inject_dim > 0 else None
        conv3 = conv2d_layer(partial, nd, nd, 3, 1)
        conv5 = nn.Conv2d(nd, nd, kernel_size=5, padding=2, bias=False)
        out = nn.Conv2d(nd, 1, kernel_size=5, padding=2, bias=True)
        if post:
            self.head = nn.Sequential(conv3, group_norm(nd), nn.ReLU(), conv5, group_norm(nd), nn.ReLU(), out)
        else:
            self.head = nn.Sequential(group_norm(nd), conv3, nn.ReLU(), group_norm(nd), conv5, nn.ReLU(), out)
        if zero_init:  # start from a flat depth map (our choice; LiftedGAN starts from a random field)
            nn.init.zeros_(out.weight)
            nn.init.zeros_(out.bias)

    def forward(self, w0: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
        z = self.mlp(w0) if self.mlp is not None else w0
        out = self.network(z[:, :, None, None])
        if self.inject is not None:
            if x2 is None:
                raise ValueError("DepthNet was built with an inject conv: pass the teacher feature map x2")
            if x2.shape[-1] != out.shape[-1]:
                x2 = F.interpolate(x2, size=out.shape[-2:], mode="bilinear", align_corners=False)
            out = out + self.inject(x2)
        return self.head(out)


class TransformNet(nn.Module):
    """DT: w0 (B,D) -> raw transformation map (B,1,S,S); see module docstring."""

    def __init__(self, style_dim: int, size: int, z_dim: int = 16, nf: int = 16, n_mlp: int = 4):
        super().__init__()
        n_up = n_upsampling_blocks(size)
        self.mlp = _latent_mlp(style_dim, z_dim, n_mlp)
        zin = z_dim if n_mlp > 0 else style_dim
        nd = nf * 2**n_up
        net: list[nn.Module] = [nn.ConvTranspose2d(zin, nd, kernel_size=4, stride=1, padding=0, bias=False), nn.ReLU()]
        for _ in range(n_up):
            net += [nn.ConvTranspose2d(nd, nd // 2, kernel_size=4, stride=2, padding=1, bias=False), group_norm(nd // 2), nn.ReLU()]
            nd //= 2
        net += [
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(nd, nd, kernel_size=3, padding=1, bias=False),
            group_norm(nd),
            nn.ReLU(),
            nn.Conv2d(nd, 1, kernel_size=5, padding=2, bias=False),
        ]
        self.network = nn.Sequential(*net)

    def forward(self, w0: torch.Tensor) -> torch.Tensor:
        z = self.mlp(w0) if self.mlp is not None else w0
        return self.network(z[:, :, None, None])


class ComposeNet(nn.Module):
    """M: (w (B,D), raw light (B,4), raw view (B,6)) -> composed style code (B,D)."""

    def __init__(self, style_dim: int, hidden: int | None = None, n_layers: int = 4, residual: bool = False):
        super().__init__()
        h = hidden or style_dim
        self.residual = residual
        self.embed_style = make_mlp(style_dim, h, n_layers, h, norm=True, out_act=ScaleShift(h))
        self.embed_light = make_mlp(4, h, n_layers, h, norm=True, out_act=ScaleShift(h))
        self.embed_view = make_mlp(6, h, n_layers, h, norm=True, out_act=ScaleShift(h))
        self.model = make_mlp(h, style_dim, n_layers, h, norm=True)
        if residual:
            last = self.model[-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, w: torch.Tensor, light_raw: torch.Tensor, view_raw: torch.Tensor) -> torch.Tensor:
        h = self.embed_style(w) + self.embed_light(light_raw) + self.embed_view(view_raw)
        out = self.model(h)
        return w + out if self.residual else out


class ImageReader(nn.Module):
    """R: an image (B,3,S,S) in [-1,1] -> (raw rotation (B,3), raw light (B,4)), tanh units.

    Used only by ``loss.cycle_image`` and ``loss.perturb_view=image`` (our additions): R learns to read from the teacher's images
    G(w) what DV and DL read from the codes w, and then reads the turned and relit images
    G(M(w, L', V')) so that M is trained on what the image shows, not on what DV reads from the
    code w' (which M can satisfy without turning the face); with ``loss.perturb_view=image`` its
    reading of G(w') is the pose of the perturbation render. Strided 3x3 convs (stride 2, LeakyReLU
    0.2) from S down to 4 px (16, 32, 64, 64, ... channels), then two linear layers.
    """

    def __init__(self, size: int, nf: int = 16):
        super().__init__()
        layers: list[nn.Module] = []
        c, s = 3, size
        i = 0
        while s > 4:
            co = min(nf * 2 ** i, 4 * nf)
            layers += [nn.Conv2d(c, co, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c, s, i = co, s // 2, i + 1
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c * s * s, 128), nn.LeakyReLU(0.2), nn.Linear(128, 7))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = torch.tanh(self.head(self.features(image)))
        return out[:, :3], out[:, 3:]
