"""HoloGAN (Nguyen-Phuoc, Li, Theis, Richardt, Yang, ICCV 2019): a native PyTorch implementation,
trainable with ``digan-bench train --model hologan`` on the teacher's samples or on any folder of
face images (the synthetic set, aligned photos), and the benchmark method ``hologan``.

Generator (HoloGAN's ``generator_AdaIN_res128`` structure, widths from ``gf``)::

    learned constant (gf*8, 4, 4, 4) --AdaIN(z), LReLU-->
    [ConvTranspose3d x2 (k3), AdaIN(z), LReLU] x volume_up           4^3 -> 16^3, gf*4 -> gf*2 channels
    rigid rotation of the feature volume by (yaw, pitch)              trilinear grid_sample
    [Conv3d k3, LReLU] x 2                                             gf channels
    projection unit: reshape (C, D, H, W) -> (C*D, H, W), Conv2d 1x1 -> gf*8, LReLU
    [ConvTranspose2d x2 (k4), AdaIN(z), LReLU] x log2(size/16)        gf*4, gf, gf/2 ... channels
    Conv2d k4 -> 3, tanh

AdaIN: instance normalisation of each channel over its spatial positions, then ``s * x + b`` with
``(s, b) = ReLU(Linear(z))`` per layer (HoloGAN's ``z_mapping_function``). The latent is HoloGAN's
uniform ``z in (-1, 1)^z_dim``, obtained exactly from the project's Gaussian latents as
``u = erf(z / sqrt(2))`` (the probability integral transform), so face ``i`` of a seed is the
same in every tool. The trainer's z is longer (the teacher's style dimension): its first
``z_dim`` coordinates are used.

Rotation: the volume's axes are (depth, rows, columns) = camera (z away, y down, x right), and the
rotation matrix is the renderer's (:func:`digan.render.camera.rotation_matrix`,
``R = Ry(yaw) Rx(pitch)``), so a volume whose front faces the camera turns like a DIGAN render.
HoloGAN learns *which end* of its depth axis faces the camera (the projection is learned and the
pose distribution is symmetric), so the sign of a trained model's yaw is a property of the model:
check it with the pose metric and set the method option ``yaw_sign: -1`` when it comes out mirrored.

Discriminator (``discriminator_IN_style``): conv k5/2 + LReLU, then ``log2(size) - 3`` blocks of
[spectrally normalised conv k5/2, instance norm, LReLU] doubling from ``df``, a linear real/fake
logit, per block a *style discriminator* (a linear classifier on the (mean, std) of the block's
features before normalisation), and with ``lambda_latent > 0`` HoloGAN's latent-reconstruction
head (Linear 128, LReLU, Linear z_dim, tanh) predicting ``u`` from fakes (identity regulariser).

Losses (non-saturating, logits): D: ``softplus(-D(x)) + softplus(D(G(u)))`` + ``lambda_style`` x the
same on every style logit + ``lambda_latent * |Q(G(u)) - u|^2``; G: ``softplus(-D(G(u)))`` +
``lambda_style * softplus(-style logits)`` + the latent term. The paper applies the style loss
to both players; HoloGAN's code only to D (we follow the paper). HoloGAN concatenates the style
statistics along the batch axis; we concatenate them per sample along channels.

Training (choices where the digan-bench trainer differs from HoloGAN's loop): the trainer runs
one optimiser over all parameters, so one step updates D and G *simultaneously* from
``L_D(D, G(u).detach()) + L_G(G; D with detached weights)`` (each player gets exactly its own
gradient) instead of HoloGAN's alternation with two G updates per D update. Adam lr 1e-4,
betas (0.5, 0.999), no weight decay, batch 32 (HoloGAN's), constant learning rate. Poses are
uniform in ``+-yaw_range`` (50 deg) and ``+-pitch_range`` (20 deg): HoloGAN's CelebA ranges
(azimuth 220..320, elevation 70..110).

Real images (option ``data``): ``"teacher"`` (default): fresh teacher samples
(``teacher_psi``, default 1.0: no truncation), the distribution DIGAN and LiftGAN distil, resized
to ``size``; or a folder of same-size square images (a synthetic set's folder uses its
``images/``), read in the deterministic, resumable order of :class:`digan.teacher.data.ImageFolderData`
(x-flipped copies with ``mirror``), resized to ``size``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from digan.errors import DiganError
from digan.render.camera import rotation_matrix
from digan.render.types import Light
from digan.student.config import StudentConfig
from digan.student.registry import Built, register_model
from digan.utils.seeding import latents as seeded_latents
from evaluate.methods import Capabilities, Method, Rendered, register_method

__all__ = [
    "HoloGANOptions",
    "HOLOGAN_DEFAULTS",
    "hologan_options",
    "gaussian_to_uniform",
    "rotate_volume",
    "AdaIN",
    "HoloGANGenerator",
    "HoloGANDiscriminator",
    "HoloGAN",
    "HoloGANObjective",
    "build_hologan",
    "load_hologan",
    "HoloGANMethod",
]


@dataclass
class HoloGANOptions:
    """HoloGAN's settings (``model.options`` of a ``--model hologan`` config)."""

    size: int = 64  # output image size, a power of two >= 2 * volume * 2**volume_up
    z_dim: int = 128
    gf: int = 64  # generator base width
    df: int = 64  # discriminator base width
    volume: int = 4  # side of the learned constant volume
    volume_up: int = 2  # 3D x2 upsamplings before the rotation (4 -> 16)
    yaw_range: float = 50.0  # training yaw ~ U(-r, r) degrees
    pitch_range: float = 20.0  # training pitch ~ U(-r, r) degrees
    style_disc: bool = True
    lambda_style: float = 1.0
    lambda_latent: float = 0.0  # identity regulariser (latent reconstruction); HoloGAN's default 0
    data: str = "teacher"  # "teacher" or a folder of images
    teacher_psi: float = 1.0
    mirror: bool = True  # folder data: also use x-flipped copies


#: trainer defaults of ``--model hologan`` (HoloGAN's optimiser and batch)
HOLOGAN_DEFAULTS: list[str] = [
    "train.lr=1e-4",
    "train.betas=[0.5, 0.999]",
    "train.weight_decay=0",
    "train.batch=32",
    "train.steps=50000",
]

#: extra overrides of ``--model hologan --preset tiny`` (32 px, narrow; CPU minutes)
HOLOGAN_TINY: list[str] = [
    "model.options.size=32",
    "model.options.gf=8",
    "model.options.df=8",
    "model.options.z_dim=64",
    "train.lr=2e-4",
    "train.batch=16",
]


def hologan_options(cfg: StudentConfig) -> HoloGANOptions:
    """The validated :class:`HoloGANOptions` of a config (unknown keys and bad values are errors)."""
    from digan.config import from_dict

    opts = from_dict(HoloGANOptions, dict(cfg.model.options), _prefix="model.options.")
    v = opts.volume * 2**opts.volume_up
    n = int(round(math.log2(max(1, opts.size))))
    if 2**n != opts.size or opts.size < 2 * v:
        raise DiganError(f"model.options.size={opts.size} must be a power of two >= {2 * v} (twice the rotated volume)")
    if min(opts.gf, opts.df, opts.z_dim, opts.volume) < 1:
        raise DiganError("model.options gf, df, z_dim and volume must be positive")
    return opts


def gaussian_to_uniform(z: torch.Tensor) -> torch.Tensor:
    """``erf(z / sqrt(2))``: N(0,1) -> U(-1,1) exactly (HoloGAN samples z uniformly)."""
    return torch.erf(z / math.sqrt(2.0))


def rotate_volume(vol: torch.Tensor, yaw: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
    """Rotate feature volumes (B,C,D,H,W) about their centre by yaw/pitch degrees (B,).

    Axes (D, H, W) = camera (z, y, x); the object turns by ``R = rotation_matrix(pitch, yaw, 0)``:
    output voxel p samples the input at ``R^T p`` (trilinear, zeros outside).
    """
    b = vol.shape[0]
    ang = torch.stack([pitch, yaw, torch.zeros_like(yaw)], 1).to(vol.dtype)
    r = rotation_matrix(ang)  # (B,3,3) acting on (x, y, z)
    theta = torch.cat([r.transpose(1, 2), torch.zeros(b, 3, 1, device=vol.device, dtype=vol.dtype)], 2)
    grid = F.affine_grid(theta, list(vol.shape), align_corners=False)
    return F.grid_sample(vol, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class AdaIN(nn.Module):
    """Instance norm over the spatial axes, then ``s * x + b`` with ``(s, b) = ReLU(Linear(z))``."""

    def __init__(self, z_dim: int, channels: int, eps: float = 1e-5):
        super().__init__()
        self.map = nn.Linear(z_dim, 2 * channels)
        nn.init.normal_(self.map.weight, std=0.02)
        nn.init.zeros_(self.map.bias)
        self.eps = eps
        self.channels = channels

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(2, x.dim()))
        mean = x.mean(dims, keepdim=True)
        var = x.var(dims, keepdim=True, unbiased=False)
        xn = (x - mean) / torch.sqrt(var + self.eps)
        sb = F.relu(self.map(u))
        shape = (x.shape[0], self.channels) + (1,) * len(dims)
        return sb[:, : self.channels].reshape(shape) * xn + sb[:, self.channels:].reshape(shape)


class HoloGANGenerator(nn.Module):
    """(u (B,z_dim) in (-1,1), yaw (B,), pitch (B,) degrees) -> images (B,3,size,size) in [-1,1]."""

    def __init__(self, o: HoloGANOptions):
        super().__init__()
        self.opts = o
        gf = o.gf
        c = gf * 8
        self.const = nn.Parameter(torch.randn(1, c, o.volume, o.volume, o.volume) * 0.02)
        self.adain0 = AdaIN(o.z_dim, c)
        self.up3d = nn.ModuleList()
        self.adain3d = nn.ModuleList()
        for i in range(o.volume_up):
            cn = max(gf * 4 // 2**i, 4)
            self.up3d.append(nn.ConvTranspose3d(c, cn, kernel_size=3, stride=2, padding=1, output_padding=1))
            self.adain3d.append(AdaIN(o.z_dim, cn))
            c = cn
        self.post3d = nn.ModuleList([nn.Conv3d(c, gf, 3, padding=1), nn.Conv3d(gf, gf, 3, padding=1)])
        v = o.volume * 2**o.volume_up
        self.project = nn.Conv2d(gf * v, gf * 8, kernel_size=1)
        c = gf * 8
        n2d = int(round(math.log2(o.size // v)))
        self.up2d = nn.ModuleList()
        self.adain2d = nn.ModuleList()
        for i in range(n2d):
            cn = gf * 4 if i == 0 else max(gf // 2 ** (i - 1), 4)
            self.up2d.append(nn.ConvTranspose2d(c, cn, kernel_size=4, stride=2, padding=1))
            self.adain2d.append(AdaIN(o.z_dim, cn))
            c = cn
        self.out = nn.Conv2d(c, 3, kernel_size=4)  # TF "SAME" for k4: pad 1 before, 2 after (see render_volume)

    def volume(self, u: torch.Tensor) -> torch.Tensor:
        """The pose-free feature volume (B, C, V, V, V) before the rotation."""
        x = self.const.expand(u.shape[0], -1, -1, -1, -1)
        x = F.leaky_relu(self.adain0(x, u), 0.2)
        for up, ada in zip(self.up3d, self.adain3d):
            x = F.leaky_relu(ada(up(x), u), 0.2)
        return x

    def render_volume(self, vol: torch.Tensor, u: torch.Tensor, yaw: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
        x = rotate_volume(vol, yaw, pitch)
        for conv in self.post3d:
            x = F.leaky_relu(conv(x), 0.2)
        b, c, d, h, w = x.shape
        x = F.leaky_relu(self.project(x.reshape(b, c * d, h, w)), 0.2)
        for up, ada in zip(self.up2d, self.adain2d):
            x = F.leaky_relu(ada(up(x), u), 0.2)
        return torch.tanh(self.out(F.pad(x, (1, 2, 1, 2))))

    def forward(self, u: torch.Tensor, yaw: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
        return self.render_volume(self.volume(u), u, yaw, pitch)


class _SNConv2d(nn.Module):
    """Conv2d with spectral normalisation (one power iteration per training forward, as
    ``torch.nn.utils.spectral_norm``); ``forward(x, frozen=True)`` uses detached weights."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, padding: int):
        super().__init__()
        conv = nn.Conv2d(cin, cout, k, stride, padding)
        self.weight = nn.Parameter(conv.weight.detach().clone())
        self.bias = nn.Parameter(conv.bias.detach().clone())
        self.stride, self.padding = stride, padding
        self.register_buffer("u", F.normalize(torch.randn(cout), dim=0))

    def forward(self, x: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        w = self.weight.detach() if frozen else self.weight
        wm = w.reshape(w.shape[0], -1)
        with torch.no_grad():
            u = self.u
            v = F.normalize(wm.detach().t() @ u, dim=0)
            if self.training and not frozen:
                u = F.normalize(wm.detach() @ v, dim=0)
                self.u.copy_(u)
        sigma = torch.dot(u, wm @ v)
        b = self.bias.detach() if frozen else self.bias
        return F.conv2d(x, w / sigma, b, self.stride, self.padding)


def _lin(layer: nn.Linear, x: torch.Tensor, frozen: bool) -> torch.Tensor:
    if frozen:
        return F.linear(x, layer.weight.detach(), layer.bias.detach() if layer.bias is not None else None)
    return layer(x)


class HoloGANDiscriminator(nn.Module):
    """x (B,3,S,S) -> (logit (B,), style logits [(B,)...], predicted u (B,z_dim) or None)."""

    def __init__(self, o: HoloGANOptions):
        super().__init__()
        self.opts = o
        df = o.df
        self.conv0 = nn.Conv2d(3, df, 5, 2, 2)
        n = int(round(math.log2(o.size))) - 3
        self.blocks = nn.ModuleList()
        self.style = nn.ModuleList()
        c = df
        for _ in range(n):
            self.blocks.append(_SNConv2d(c, c * 2, 5, 2, 2))
            if o.style_disc:
                self.style.append(nn.Linear(4 * c, 1))  # (mean, std) of 2c channels
            c *= 2
        flat = c * 4 * 4
        self.logit = nn.Linear(flat, 1)
        if o.lambda_latent > 0:
            self.latent1 = nn.Linear(flat, 128)
            self.latent2 = nn.Linear(128, o.z_dim)
        else:
            self.latent1 = self.latent2 = None

    def forward(self, x: torch.Tensor, frozen: bool = False):
        if frozen:
            h = F.conv2d(x, self.conv0.weight.detach(), self.conv0.bias.detach(), 2, 2)
        else:
            h = self.conv0(x)
        h = F.leaky_relu(h, 0.2)
        styles = []
        for i, blk in enumerate(self.blocks):
            h = blk(h, frozen=frozen)
            mean = h.mean((2, 3))
            std = torch.sqrt(h.var((2, 3), unbiased=False) + 1e-6)
            if self.opts.style_disc:
                styles.append(_lin(self.style[i], torch.cat([mean, std], 1), frozen)[:, 0])
            h = (h - mean[:, :, None, None]) / std[:, :, None, None]
            h = F.leaky_relu(h, 0.2)
        flat = h.reshape(h.shape[0], -1)
        logit = _lin(self.logit, flat, frozen)[:, 0]
        q = None
        if self.latent1 is not None:
            q = torch.tanh(_lin(self.latent2, F.leaky_relu(_lin(self.latent1, flat, frozen), 0.2), frozen))
        return logit, styles, q


class HoloGAN(nn.Module):
    """Generator + discriminator (the trainer's ``core``: both are optimised and checkpointed);
    ``step`` counts training steps (it orders the images of a data folder on resume)."""

    def __init__(self, opts: HoloGANOptions):
        super().__init__()
        self.opts = opts
        self.generator = HoloGANGenerator(opts)
        self.discriminator = HoloGANDiscriminator(opts)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))


def _resize(img: torch.Tensor, size: int) -> torch.Tensor:
    if img.shape[-1] == size:
        return img
    return F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _data_folder(path: str) -> Path:
    p = Path(path).expanduser()
    if (p / "manifest.json").is_file() and (p / "images").is_dir():
        return p / "images"  # a synthetic data set: its images, not its maps and sheets
    return p


class HoloGANObjective(nn.Module):
    """The trainer's objective: ``forward(z) -> (L_D + L_G, logs)`` (see the module docstring)."""

    def __init__(self, core: HoloGAN, teacher: Any, opts: HoloGANOptions, seed: int = 0):
        super().__init__()
        self.core = core
        self.opts = opts
        self._teacher = [teacher]
        self.data = None
        if opts.data != "teacher":
            from digan.teacher.data import ImageFolderData

            self.data = ImageFolderData(_data_folder(opts.data), size=None, mirror=opts.mirror, seed=seed)

    @property
    def teacher(self) -> Any:
        return self._teacher[0]

    @torch.no_grad()
    def real_batch(self, b: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
        """``b`` real images at ``opts.size`` (teacher samples, from ``generator`` or the global RNG,
        or the next images of the folder)."""
        if self.data is None:
            from digan.student.objective import sample_teacher

            z = torch.randn(b, int(self.teacher.style_dim), generator=generator).to(device)
            _, img = sample_teacher(self.teacher, z, self.opts.teacher_psi)
        else:
            from digan.utils import dist

            step = int(self.core.step)
            idx = self.data.indices((step * dist.world_size() + dist.rank()) * b, b)
            img = self.data.load(idx).to(device)
        return _resize(img.float(), self.opts.size).clamp(-1, 1)

    def sample_poses(self, b: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        o = self.opts
        yaw = (torch.rand(b) * 2 - 1) * o.yaw_range
        pitch = (torch.rand(b) * 2 - 1) * o.pitch_range
        return yaw.to(device), pitch.to(device)

    def forward(self, z: torch.Tensor, keep: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        o = self.opts
        G, D = self.core.generator, self.core.discriminator
        b, dev = z.shape[0], z.device
        u = gaussian_to_uniform(z[:, : o.z_dim])
        yaw, pitch = self.sample_poses(b, dev)
        fake = G(u, yaw, pitch)
        real = self.real_batch(b, dev)
        # discriminator: real vs detached fakes
        lr, sr, _ = D(real)
        lf, sf, qf = D(fake.detach())
        d_real, d_fake = F.softplus(-lr).mean(), F.softplus(lf).mean()
        loss_d = d_real + d_fake
        logs: dict[str, torch.Tensor] = {"d_real": d_real.detach(), "d_fake": d_fake.detach()}
        if sr:
            st = sum(F.softplus(-a).mean() + F.softplus(c).mean() for a, c in zip(sr, sf))
            loss_d = loss_d + o.lambda_style * st
            logs["d_style"] = st.detach()
        if qf is not None:
            ql = (qf - u).pow(2).mean()
            loss_d = loss_d + o.lambda_latent * ql
        # generator: through the discriminator with detached weights
        lg, sg, qg = D(fake, frozen=True)
        g_adv = F.softplus(-lg).mean()
        loss_g = g_adv
        logs["g_adv"] = g_adv.detach()
        if sg:
            gs = sum(F.softplus(-a).mean() for a in sg)
            loss_g = loss_g + o.lambda_style * gs
            logs["g_style"] = gs.detach()
        if qg is not None:
            qgl = (qg - u).pow(2).mean()
            loss_g = loss_g + o.lambda_latent * qgl
            logs["latent"] = qgl.detach()
        total = loss_d + loss_g
        logs["total"] = total.detach()
        if self.training:
            with torch.no_grad():
                self.core.step += 1
        return total, logs

    @torch.no_grad()
    def preview(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows: real images, then the same faces at yaw -r, -r/2, 0, r/2, r (pitch 0)."""
        o = self.opts
        b, dev = z.shape[0], z.device
        u = gaussian_to_uniform(z[:, : o.z_dim])
        G = self.core.generator
        vol = G.volume(u)
        # fixed teacher samples (own generator: a preview must not move the training RNG, or resume would differ)
        rows = {"real": self.real_batch(b, dev, torch.Generator().manual_seed(20240601)) if self.data is None
                else self.data.load(list(range(min(b, len(self.data))))).to(dev)}
        rows["real"] = _resize(rows["real"], o.size)
        if rows["real"].shape[0] < b:
            rows["real"] = torch.cat([rows["real"], rows["real"].new_ones(b - rows["real"].shape[0], 3, o.size, o.size)])
        for y in (-o.yaw_range, -o.yaw_range / 2, 0.0, o.yaw_range / 2, o.yaw_range):
            yaw = torch.full((b,), float(y), device=dev)
            rows[f"yaw{y:+.0f}"] = G.render_volume(vol, u, yaw, torch.zeros_like(yaw))
        return rows


@register_model("hologan", help="HoloGAN: 3D feature volume, rigid rotation, projection unit, AdaIN; adversarial on teacher samples or a folder",
                defaults=HOLOGAN_DEFAULTS, options=HoloGANOptions(), presets={"tiny": HOLOGAN_TINY})
def build_hologan(cfg: StudentConfig, teacher: Any, device: torch.device | str = "cpu") -> Built:
    """The trainer's builder for ``hologan`` (options in ``cfg.model.options``)."""
    if cfg.model.name != "hologan":
        raise DiganError(f"build_hologan got a config for model '{cfg.model.name}'; make it with make_config(model='hologan')")
    if cfg.variant != "full":
        raise DiganError(f"hologan has no variant '{cfg.variant}' (the variants are DIGAN ablations); train with --variant full")
    opts = hologan_options(cfg)
    if opts.z_dim > int(teacher.style_dim):
        raise DiganError(f"model.options.z_dim={opts.z_dim} exceeds the trainer's latent size {int(teacher.style_dim)} "
                         "(the teacher's style dimension); lower model.options.z_dim")
    core = HoloGAN(opts).to(device)
    obj = HoloGANObjective(core, teacher, opts, seed=cfg.train.seed)
    n_g = sum(p.numel() for p in core.generator.parameters())
    n_d = sum(p.numel() for p in core.discriminator.parameters())
    return Built(objective=obj, core=core, info={"model": "hologan", "options": dict(cfg.model.options),
                                                 "data": opts.data, "params_g": n_g, "params_d": n_d,
                                                 "update": "simultaneous D and G step (one optimiser, detached opponents)"})


def load_hologan(path: str | Path, device: torch.device | str = "cpu") -> tuple[HoloGAN, StudentConfig, dict[str, Any]]:
    """(model in eval mode, config, checkpoint facts) of a ``--model hologan`` student.pt/checkpoint.pt
    (or a folder holding student.pt)."""
    from digan.student.train import CKPT_FORMAT, load_config_from_checkpoint
    from digan.utils.io import load_torch

    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / "student.pt").is_file():
            raise DiganError(f"no student.pt in {p}; train one with 'digan-bench train --model hologan --out {p}' or pass the file")
        p = p / "student.pt"
    ck = load_torch(p, what="HoloGAN checkpoint")
    if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT:
        raise DiganError(f"{p} is not a digan-bench checkpoint; train HoloGAN with 'digan-bench train --model hologan'")
    if ck.get("model") != "hologan":
        raise DiganError(f"{p} holds a '{ck.get('model')}' model, not hologan; use the method '{ck.get('model')}:{p}'")
    cfg = load_config_from_checkpoint(ck, p)
    model = HoloGAN(hologan_options(cfg))
    model.load_state_dict(ck["state"])
    model.to(device).eval()
    return model, cfg, {"path": str(p), "step": ck.get("step"), "teacher": ck.get("teacher"), "meta": ck.get("meta", {})}


_REASONS = {
    "light": "HoloGAN: lighting is entangled in the appearance code z; no light control",
    "depth": "HoloGAN renders a learned feature volume through a learned projection: no depth or normals",
    "mesh": "HoloGAN has no explicit 3D surface to export",
    "reconstruct": "HoloGAN has no depth output to reconstruct images with",
}


class HoloGANMethod(Method):
    """A trained HoloGAN as the benchmark method ``hologan:PATH`` (options ``yaw_sign``, ``device``)."""

    name = "hologan"

    def __init__(self, path: str | Path, yaw_sign: float = 1.0, device: str | torch.device | None = None):
        if float(yaw_sign) not in (1.0, -1.0):
            raise DiganError(f"hologan option yaw_sign must be 1 or -1, got {yaw_sign}")
        self.model, self.cfg, self.ck = load_hologan(path, device or "cpu")
        self.opts = self.model.opts
        self.yaw_sign = float(yaw_sign)
        self.path = Path(self.ck["path"])

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(pose=True, light=False, depth=False, mesh=False, reconstruct=False, generate=True,
                            image_size=int(self.opts.size), reasons=dict(_REASONS))

    @property
    def device(self) -> torch.device:
        return self.model.generator.const.device

    def to(self, device: torch.device | str) -> "HoloGANMethod":
        self.model.to(device)
        return self

    def latents(self, n: int, seed: int, start: int = 0) -> torch.Tensor:
        return seeded_latents(n, int(self.opts.z_dim), seed, start)

    @torch.no_grad()
    def render(self, latents: torch.Tensor, yaw: float = 0.0, pitch: float = 0.0, light: Light | None = None) -> Rendered:
        if light is not None:
            raise DiganError(f"hologan cannot relight ({_REASONS['light']}); render without a light")
        z = latents.to(self.device, torch.float32)
        b = z.shape[0]
        y = torch.full((b,), self.yaw_sign * float(yaw), device=self.device)
        p = torch.full((b,), float(pitch), device=self.device)
        img = self.model.generator(gaussian_to_uniform(z), y, p)
        return Rendered(image=img.clamp(-1, 1))

    def weights(self) -> dict[str, Any]:
        return {"hologan": str(self.path)}

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "variant": self.variant, "checkpoint": str(self.path), "step": self.ck.get("step"),
                "image_size": int(self.opts.size), "options": dict(self.cfg.model.options), "yaw_sign": self.yaw_sign,
                "trained_yaw_range": self.opts.yaw_range, "trained_pitch_range": self.opts.pitch_range}


@register_method("hologan", help="HoloGAN (native). hologan:PATH to a 'train --model hologan' student.pt")
def _make_hologan(arg: str | None, variant: str = "full", yaw_sign: float = 1.0, device: str | None = None, **unknown: Any) -> Method:
    if unknown:
        raise DiganError(f"hologan has no option '{sorted(unknown)[0]}'; valid options: yaw_sign, device")
    if variant != "full":
        raise DiganError(f"hologan has no variant '{variant}'; use hologan:PATH")
    if not arg:
        raise DiganError("hologan needs a checkpoint: hologan:PATH (train one with 'digan-bench train --model hologan "
                         "--teacher T --out DIR')")
    return HoloGANMethod(arg, yaw_sign=yaw_sign, device=device)
