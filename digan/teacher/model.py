"""StyleGAN2 generator and discriminator in pure PyTorch, in the parameter layout of rosinality's
``stylegan2-pytorch`` (the layout LiftedGAN and most 3D-lifting code load).

Parameter names and shapes (``size`` = output resolution, ``C[r]`` = channel table, ``D`` =
style dimension, ``L = log2(size)``)::

    Generator
      style.{1..n_mlp}.weight (D, D)  .bias (D)       EqualLinear, lr_mul = lr_mlp (0.01)
      input.input (1, C[4], 4, 4)
      conv1.conv.weight (1, C[4], C[4], 3, 3)  conv1.conv.modulation.weight (C[4], D) .bias (C[4])
      conv1.noise.weight (1)  conv1.activate.bias (C[4])
      to_rgb1.conv.weight (1, 3, C[4], 1, 1)  to_rgb1.conv.modulation.*  to_rgb1.bias (1, 3, 1, 1)
      convs.{2j}   upsampling StyledConv C[2^(j+2)] -> C[2^(j+3)], plus buffer conv.blur.kernel (4, 4)
      convs.{2j+1} StyledConv C[2^(j+3)] -> C[2^(j+3)]              (j = 0 .. L-3)
      to_rgbs.{j}  ToRGB at 2^(j+3), plus buffer upsample.kernel (4, 4)
      noises.noise_{i} (1, 1, 2^((i+5)//2), 2^((i+5)//2))           (i = 0 .. 2L-4)

    Discriminator
      convs.0.0.weight (C[size], 3, 1, 1)  convs.0.1.bias
      convs.{k}.conv1.0.weight / conv1.1.bias, conv2.0.kernel (blur) / conv2.1.weight / conv2.2.bias,
      skip.0.kernel / skip.1.weight (no bias)                        (k = 1 .. L-2, ResBlocks)
      final_conv.0.weight (C[4], C[4]+1, 3, 3)  final_conv.1.bias
      final_linear.0.weight (C[4], 16 C[4]) .bias  final_linear.1.weight (1, C[4]) .bias

Maths: equalised learning rate (weights stored N(0,1)/lr_mul, scaled at run time), leaky ReLU
0.2 with gain sqrt(2) and a separate bias ("fused" in the reference), modulated/demodulated
convolutions, per-layer noise with a learned strength, skip-architecture RGB outputs, residual
discriminator with minibatch standard deviation (group 4, 1 feature).

Choices where the references differ:
* Modulated convolutions run *non-fused* by default (scale the input activations by the style,
  convolve with the shared weight, scale the output by the demodulation coefficients). This is the
  same function as the fused grouped convolution (``ModulatedConv2d.fused = True`` selects that;
  a test checks both agree) and is faster on CPU and for training batches.
* Minibatch-stddev groups: rosinality requires the batch to be divisible by the group size; here
  the group is the largest divisor of the batch that is <= 4 (identical whenever the reference
  works).
* NVIDIA's ``conv_clamp`` (activation clamping at +-256 used with fp16) is not applied.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from digan.errors import DiganError
from digan.teacher.upfirdn import fir_filter, make_kernel, upfirdn2d

__all__ = [
    "StyleGAN2Config",
    "channel_table",
    "Generator",
    "Discriminator",
    "ModulatedConv2d",
]

SQRT2 = math.sqrt(2.0)


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


@dataclass
class StyleGAN2Config:
    """Architecture of a StyleGAN2 generator/discriminator pair.

    ``channels`` (resolution -> width) overrides the rosinality table built from
    ``channel_multiplier`` ({4..32: 512, 64: 256m, 128: 128m, 256: 64m, 512: 32m, 1024: 16m});
    LiftedGAN's teacher, for example, uses {4: 512, 8: 512, 16: 256, 32: 128, 64: 64, 128: 32,
    256: 16}. ``d_channels`` does the same for the discriminator (default: the generator's table).
    """

    size: int = 256
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    channels: Optional[dict[int, int]] = None
    d_channels: Optional[dict[int, int]] = None
    lr_mlp: float = 0.01
    blur_kernel: list[int] = field(default_factory=lambda: [1, 3, 3, 1])

    def validate(self) -> "StyleGAN2Config":
        """Raise DiganError for impossible values; return self."""
        s = self.size
        if s < 8 or s > 2048 or (s & (s - 1)) != 0:
            raise DiganError(f"teacher size {s} is not a power of two between 8 and 2048; set model.size=64, 128, 256, ...")
        if self.style_dim < 1 or self.n_mlp < 1:
            raise DiganError(f"teacher style_dim ({self.style_dim}) and n_mlp ({self.n_mlp}) must be >= 1")
        for name in ("channels", "d_channels"):
            if getattr(self, name) is not None or name == "channels":
                tab = channel_table(self, discriminator=(name == "d_channels"))
                for r in _resolutions(s):
                    if tab.get(r, 0) < 1:
                        raise DiganError(
                            f"model.{name} has no positive width for resolution {r}; give every resolution 4..{s}"
                        )
        return self

    @property
    def log_size(self) -> int:
        return int(math.log2(self.size))

    @property
    def n_latent(self) -> int:
        """Number of per-layer styles (w+ rows): 2 * log2(size) - 2."""
        return self.log_size * 2 - 2

    @property
    def num_layers(self) -> int:
        """Number of noise inputs / styled convolutions: 2 * log2(size) - 3."""
        return (self.log_size - 2) * 2 + 1


def _resolutions(size: int) -> list[int]:
    return [2**i for i in range(2, int(math.log2(size)) + 1)]


def channel_table(cfg: StyleGAN2Config, discriminator: bool = False) -> dict[int, int]:
    """Resolution -> channel width for the generator (or the discriminator)."""
    custom = cfg.d_channels if discriminator and cfg.d_channels is not None else cfg.channels
    if custom is not None:
        return {int(k): int(v) for k, v in custom.items()}
    m = cfg.channel_multiplier
    return {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * m, 128: 128 * m, 256: 64 * m, 512: 32 * m, 1024: 16 * m, 2048: 8 * m}


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------


def bias_leaky_relu(x: torch.Tensor, bias: Optional[torch.Tensor] = None, slope: float = 0.2, gain: float = SQRT2) -> torch.Tensor:
    """``leaky_relu(x + bias) * sqrt(2)``; ``bias`` broadcasts over dim 1."""
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, slope) * gain


class ScaledLeakyReLU(nn.Module):
    """Bias + leaky ReLU(0.2) * sqrt(2) (rosinality's ``FusedLeakyReLU``; parameter ``bias``)."""

    def __init__(self, channels: int, bias: bool = True):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bias_leaky_relu(x, self.bias)


class PixelNorm(nn.Module):
    """Normalise each latent vector to unit root-mean-square."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weight ~ N(0,1)/lr_mul, scaled by lr_mul/sqrt(in)."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0, lr_mul: float = 1.0, activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            return bias_leaky_relu(F.linear(x, self.weight * self.scale), b)
        return F.linear(x, self.weight * self.scale, b)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, activation={self.activation}"


class EqualConv2d(nn.Module):
    """Conv2d with equalised learning rate (weight scaled by 1/sqrt(fan_in))."""

    def __init__(self, in_ch: int, out_ch: int, k: int, stride: int = 1, padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, k, k))
        self.scale = 1.0 / math.sqrt(in_ch * k * k)
        self.stride, self.padding = stride, padding
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class Blur(nn.Module):
    """FIR filter with padding (buffer ``kernel``); ``upsample_factor`` scales the kernel by f^2."""

    def __init__(self, kernel: Sequence[int], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        k = make_kernel(kernel)
        if upsample_factor > 1:
            k = k * upsample_factor**2
        self.register_buffer("kernel", k)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p0, p1 = self.pad
        return fir_filter(F.pad(x, [p0, p1, p0, p1]), self.kernel)


class Upsample(nn.Module):
    """2x FIR upsampling (buffer ``kernel`` = normalised kernel * 4)."""

    def __init__(self, kernel: Sequence[int], factor: int = 2):
        super().__init__()
        self.factor = factor
        k = make_kernel(kernel) * factor**2
        self.register_buffer("kernel", k)
        p = k.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, down=1, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Style-modulated (optionally demodulated) convolution, optional 2x up/down-sampling.

    ``weight`` (1, out, in, k, k); ``modulation`` EqualLinear(style_dim -> in, bias init 1).
    Upsampling: stride-2 transposed convolution, then a [1,3,3,1] blur (pad (1,1) for k=3).
    Downsampling: blur, then stride-2 convolution.
    """

    fused: bool = False  # class default; set per instance or globally for the grouped-conv path

    def __init__(self, in_ch: int, out_ch: int, k: int, style_dim: int, demodulate: bool = True,
                 upsample: bool = False, downsample: bool = False, blur_kernel: Sequence[int] = (1, 3, 3, 1)):
        super().__init__()
        self.eps = 1e-8
        self.kernel_size = k
        self.in_channel, self.out_channel = in_ch, out_ch
        self.upsample, self.downsample = upsample, downsample
        nk = len(blur_kernel)
        if upsample:
            f = 2
            p = (nk - f) - (k - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + f - 1, p // 2 + 1), upsample_factor=f)
        if downsample:
            f = 2
            p = (nk - f) + (k - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2, p // 2))
        self.scale = 1.0 / math.sqrt(in_ch * k * k)
        self.padding = k // 2
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, k, k))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.demodulate = demodulate

    def extra_repr(self) -> str:
        return f"{self.in_channel}, {self.out_channel}, k={self.kernel_size}, up={self.upsample}, down={self.downsample}"

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return self._forward_fused(x, style)
        b = x.shape[0]
        s = self.modulation(style)  # (B, in)
        w = self.weight[0] * self.scale  # (out, in, k, k)
        x = x * s.view(b, -1, 1, 1)
        if self.upsample:
            out = F.conv_transpose2d(x, w.transpose(0, 1), stride=2)
            out = self.blur(out)
        elif self.downsample:
            out = F.conv2d(self.blur(x), w, stride=2)
        else:
            out = F.conv2d(x, w, padding=self.padding)
        if self.demodulate:
            # sum_{i,kh,kw} (w_oi s_i)^2 = sum_i s_i^2 * sum_{kh,kw} w_oi^2
            d = torch.rsqrt(s.square() @ w.square().sum([2, 3]).t() + 1e-8)  # (B, out)
            out = out * d.view(b, -1, 1, 1)
        return out

    def _forward_fused(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Reference path: per-sample modulated weights applied as one grouped convolution."""
        b, cin, h, w_ = x.shape
        s = self.modulation(style).view(b, 1, cin, 1, 1)
        weight = self.scale * self.weight * s
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.square().sum([2, 3, 4]) + 1e-8).view(b, self.out_channel, 1, 1, 1)
        k = self.kernel_size
        weight = weight.view(b * self.out_channel, cin, k, k)
        if self.upsample:
            xi = x.reshape(1, b * cin, h, w_)
            weight = weight.view(b, self.out_channel, cin, k, k).transpose(1, 2).reshape(b * cin, self.out_channel, k, k)
            out = F.conv_transpose2d(xi, weight, stride=2, groups=b)
            out = out.view(b, self.out_channel, out.shape[2], out.shape[3])
            return self.blur(out)
        if self.downsample:
            xi = self.blur(x)
            xi = xi.reshape(1, b * cin, xi.shape[2], xi.shape[3])
            out = F.conv2d(xi, weight, stride=2, groups=b)
        else:
            xi = x.reshape(1, b * cin, h, w_)
            out = F.conv2d(xi, weight, padding=self.padding, groups=b)
        return out.view(b, self.out_channel, out.shape[2], out.shape[3])


class NoiseInjection(nn.Module):
    """Adds ``weight * noise``; fresh N(0,1) noise when none is given."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        if noise is None:
            b, _, h, w = x.shape
            noise = x.new_empty(b, 1, h, w).normal_()
        return x + self.weight * noise


class ConstantInput(nn.Module):
    """Learned 4x4 constant (parameter ``input``)."""

    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


class StyledConv(nn.Module):
    """ModulatedConv2d -> noise -> bias + leaky ReLU."""

    def __init__(self, in_ch: int, out_ch: int, k: int, style_dim: int, upsample: bool = False,
                 blur_kernel: Sequence[int] = (1, 3, 3, 1), demodulate: bool = True):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, k, style_dim, upsample=upsample, blur_kernel=blur_kernel, demodulate=demodulate)
        self.noise = NoiseInjection()
        self.activate = ScaledLeakyReLU(out_ch)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, style), noise=noise))


class ToRGB(nn.Module):
    """1x1 modulated (not demodulated) conv to RGB plus bias, added to the upsampled skip image."""

    def __init__(self, in_ch: int, style_dim: int, upsample: bool = True, blur_kernel: Sequence[int] = (1, 3, 3, 1)):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: Optional[torch.Tensor] = None) -> torch.Tensor:
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


# --------------------------------------------------------------------------------------------
# generator
# --------------------------------------------------------------------------------------------


class Generator(nn.Module):
    """StyleGAN2 generator (mapping z -> w, synthesis w+ -> image in about [-1, 1]).

    ``forward`` keeps rosinality's signature (a list of z or w tensors, ``input_is_latent``,
    ``truncation``/``truncation_latent``, ``noise``/``randomize_noise``, ``inject_index``,
    ``return_latents``) so code written for that implementation runs unchanged; the
    :class:`digan.teacher.api.Teacher` wrapper is the friendlier interface.
    """

    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.size = cfg.size
        self.style_dim = d = cfg.style_dim
        self.channels = channel_table(cfg)
        bk = list(cfg.blur_kernel)
        self.style = nn.Sequential(PixelNorm(), *[EqualLinear(d, d, lr_mul=cfg.lr_mlp, activation=True) for _ in range(cfg.n_mlp)])
        c4 = self.channels[4]
        self.input = ConstantInput(c4)
        self.conv1 = StyledConv(c4, c4, 3, d, blur_kernel=bk)
        self.to_rgb1 = ToRGB(c4, d, upsample=False)
        self.log_size = cfg.log_size
        self.num_layers = cfg.num_layers
        self.n_latent = cfg.n_latent
        self.convs = nn.ModuleList()
        self.upsamples = nn.ModuleList()  # kept empty, as in the reference layout
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            r = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, r, r))
        cin = c4
        for i in range(3, self.log_size + 1):
            cout = self.channels[2**i]
            self.convs.append(StyledConv(cin, cout, 3, d, upsample=True, blur_kernel=bk))
            self.convs.append(StyledConv(cout, cout, 3, d, blur_kernel=bk))
            self.to_rgbs.append(ToRGB(cout, d, blur_kernel=bk))
            cin = cout

    # -- latents ------------------------------------------------------------------------------
    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D) -> w (B, D)."""
        return self.style(z)

    get_latent = mapping

    @torch.no_grad()
    def mean_latent(self, n: int = 10000, seed: int | None = None) -> torch.Tensor:
        """Average w over ``n`` random z (shape (1, D)); ``seed`` makes it reproducible."""
        dev = self.input.input.device
        g = torch.Generator(device="cpu")
        if seed is not None:
            g.manual_seed(int(seed))
        else:
            g.seed()
        acc = torch.zeros(1, self.style_dim, device=dev, dtype=torch.float64)
        done = 0
        while done < n:
            m = min(4096, n - done)
            z = torch.randn(m, self.style_dim, generator=g).to(dev)
            acc += self.style(z).double().sum(0, keepdim=True)
            done += m
        return (acc / n).float()

    def fixed_noise(self) -> list[torch.Tensor]:
        """The registered noise buffers (what ``randomize_noise=False`` uses)."""
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    def make_noise(self) -> list[torch.Tensor]:
        """Fresh noise maps (one per layer), each (1, 1, r, r)."""
        dev = self.input.input.device
        return [torch.randn(1, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2), device=dev) for i in range(self.num_layers)]

    def broadcast(self, w: torch.Tensor) -> torch.Tensor:
        """w (B, D) -> w+ (B, n_latent, D); w+ passes through unchanged (shape checked)."""
        if w.ndim == 2:
            return w.unsqueeze(1).expand(-1, self.n_latent, -1)
        if w.ndim == 3 and w.shape[1] == self.n_latent:
            return w
        raise DiganError(f"latent has shape {tuple(w.shape)}; expected (B, {self.style_dim}) or (B, {self.n_latent}, {self.style_dim})")

    # -- synthesis ----------------------------------------------------------------------------
    def synthesis(self, latent: torch.Tensor, noise: Optional[Sequence[Optional[torch.Tensor]]] = None,
                  return_features: bool = False):
        """w+ (B, n_latent, D) -> image (B, 3, size, size); ``noise`` None means fresh noise.

        With ``return_features`` also returns the feature map after the last convolution at every
        resolution (4, 8, ..., size; the last one is the output-resolution map).
        """
        latent = self.broadcast(latent)
        if noise is None:
            noise = [None] * self.num_layers
        b = latent.shape[0]
        out = self.input(b)
        out = self.conv1(out, latent[:, 0], noise=noise[0])
        feats = [out] if return_features else None
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for conv_up, conv, n1, n2, to_rgb in zip(self.convs[::2], self.convs[1::2], noise[1::2], noise[2::2], self.to_rgbs):
            out = conv_up(out, latent[:, i], noise=n1)
            out = conv(out, latent[:, i + 1], noise=n2)
            if feats is not None:
                feats.append(out)
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return (skip, feats) if return_features else skip

    def forward(self, styles, return_latents: bool = False, inject_index: Optional[int] = None, truncation: float = 1.0,
                truncation_latent: Optional[torch.Tensor] = None, input_is_latent: bool = False,
                noise: Optional[Sequence[Optional[torch.Tensor]]] = None, randomize_noise: bool = True,
                return_features: bool = False):
        """rosinality-compatible call: returns ``(image, latent or None)`` (+ features if asked)."""
        if isinstance(styles, torch.Tensor):
            styles = [styles]
        if not input_is_latent:
            styles = [self.style(s) for s in styles]
        if noise is None:
            noise = [None] * self.num_layers if randomize_noise else self.fixed_noise()
        if truncation < 1:
            if truncation_latent is None:
                raise ValueError("truncation < 1 needs truncation_latent (the average w)")
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]
        if len(styles) < 2:
            latent = self.broadcast(styles[0])
        else:
            if inject_index is None:
                inject_index = random.randint(1, self.n_latent - 1)
            a = styles[0].unsqueeze(1).expand(-1, inject_index, -1) if styles[0].ndim == 2 else styles[0][:, :inject_index]
            c = styles[1].unsqueeze(1).expand(-1, self.n_latent - inject_index, -1) if styles[1].ndim == 2 else styles[1][:, inject_index:]
            latent = torch.cat([a, c], 1)
        res = self.synthesis(latent, noise=noise, return_features=return_features)
        if return_features:
            img, feats = res
            return img, (latent if return_latents else None), feats
        return res, (latent if return_latents else None)


# --------------------------------------------------------------------------------------------
# discriminator
# --------------------------------------------------------------------------------------------


class ConvLayer(nn.Sequential):
    """[Blur] -> EqualConv2d -> [bias + leaky ReLU]; indices as in the reference (0, 1, 2)."""

    def __init__(self, in_ch: int, out_ch: int, k: int, downsample: bool = False,
                 blur_kernel: Sequence[int] = (1, 3, 3, 1), bias: bool = True, activate: bool = True):
        layers: list[nn.Module] = []
        if downsample:
            f = 2
            p = (len(blur_kernel) - f) + (k - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, k // 2
        layers.append(EqualConv2d(in_ch, out_ch, k, stride=stride, padding=padding, bias=bias and not activate))
        if activate:
            layers.append(ScaledLeakyReLU(out_ch, bias=bias))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Residual discriminator block: two 3x3 convs (second downsamples) + 1x1 skip, / sqrt(2)."""

    def __init__(self, in_ch: int, out_ch: int, blur_kernel: Sequence[int] = (1, 3, 3, 1)):
        super().__init__()
        self.conv1 = ConvLayer(in_ch, in_ch, 3, blur_kernel=blur_kernel)
        self.conv2 = ConvLayer(in_ch, out_ch, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_ch, out_ch, 1, downsample=True, activate=False, bias=False, blur_kernel=blur_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / SQRT2


def _stddev_group(batch: int, group: int) -> int:
    g = min(batch, group)
    while batch % g:
        g -= 1
    return g


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator; returns one logit per image (B, 1)."""

    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        ch = channel_table(cfg, discriminator=True)
        self.channels = ch
        bk = list(cfg.blur_kernel)
        size = cfg.size
        convs: list[nn.Module] = [ConvLayer(3, ch[size], 1)]
        cin = ch[size]
        for i in range(cfg.log_size, 2, -1):
            cout = ch[2 ** (i - 1)]
            convs.append(ResBlock(cin, cout, bk))
            cin = cout
        self.convs = nn.Sequential(*convs)
        self.stddev_group = 4
        self.stddev_feat = 1
        self.final_conv = ConvLayer(cin + 1, ch[4], 3)
        self.final_linear = nn.Sequential(EqualLinear(ch[4] * 16, ch[4], activation=True), EqualLinear(ch[4], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.convs(x)
        b, c, h, w = out.shape
        g = _stddev_group(b, self.stddev_group)
        f = self.stddev_feat
        y = out.view(g, -1, f, c // f, h, w)
        y = torch.sqrt(y.var(0, unbiased=False) + 1e-8)
        y = y.mean([2, 3, 4], keepdim=True).squeeze(2)  # (B/g, f, 1, 1)
        y = y.repeat(g, 1, h, w)
        out = torch.cat([out, y], 1)
        out = self.final_conv(out)
        return self.final_linear(out.reshape(b, -1))
