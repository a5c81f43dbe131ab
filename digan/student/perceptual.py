"""Pluggable perceptual loss for the reconstruction terms.

* ``vgg16`` (what users expect, LiftedGAN's setting): torchvision VGG16 features at relu2_2,
  relu3_3 and relu4_3, channel-normalised ("cosine": ``sum_c (f1/|f1| - f2/|f2|)^2``), averaged
  over the layers and over 3 scales (input, 1/2, 1/4). Weights are read from
  ``vgg16-397923af.pth`` in the torch hub cache (``$TORCH_HOME/hub/checkpoints``) or from an
  explicit path; nothing is downloaded. Asking for ``vgg16`` without the file raises
  :class:`~digan.errors.MissingAssetError`.
* ``laplacian_pyramid`` (offline fallback, no weights): mean L1 between the Laplacian pyramids of
  the two images (``n_scale + 1`` levels: band-passes then the low-pass residual). It rewards
  matching edges at several scales, which is the part of a perceptual loss that matters for
  distillation from a fixed teacher, but it is *not* VGG: runs that use it say so in
  ``run.json`` (``perceptual`` entry) and the CLI warns.
* ``auto`` (default): ``vgg16`` when the weights are found, else ``laplacian_pyramid`` with a warning.
* ``none``: no perceptual term.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from digan.errors import DiganError, MissingAssetError

__all__ = ["VGG16_FILE", "find_vgg16_weights", "VGG16Perceptual", "LaplacianPyramidLoss", "build_perceptual"]

VGG16_FILE = "vgg16-397923af.pth"
#: end index (inclusive) in torchvision's ``vgg16().features`` of relu1_2, relu2_2, relu3_3, relu4_3
_SLICE_ENDS = (3, 8, 15, 22)
LAYER_NAMES = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")


def find_vgg16_weights(path: str | Path | None = None) -> Path | None:
    """The VGG16 weight file: ``path`` if given (must exist), else the torch hub cache copy, else None."""
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise MissingAssetError("VGG16 weights", str(p), "pass an existing vgg16-397923af.pth")
        return p
    p = Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE
    return p if p.is_file() else None


def _masked_mean(loss: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return loss.mean()
    h, w = loss.shape[-2:]
    m = F.adaptive_avg_pool2d(mask, (h, w)).expand_as(loss)
    return (loss * m).sum() / m.sum().clamp(min=1e-8)


class VGG16Perceptual(nn.Module):
    """VGG16 perceptual distance between images in [-1,1]; ``forward(a, b, mask=None)`` -> scalar.

    Args:
        state_dict: torchvision ``vgg16`` state dict (full, or only ``features.*`` keys).
        layers: indices into (relu1_2, relu2_2, relu3_3, relu4_3); default (1, 2, 3) as LiftedGAN.
        n_scale: number of scales (input, then 2x average-pooled each time).
        loss_type: ``cosine`` (channel-normalised squared distance), ``l1`` or ``l2``.
    """

    def __init__(self, state_dict: dict[str, torch.Tensor], layers: tuple[int, ...] = (1, 2, 3), n_scale: int = 3, loss_type: str = "cosine"):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        feats = make_layers(cfgs["D"])[: _SLICE_ENDS[max(layers)] + 1]  # vgg16().features without the classifier
        sd = {k[len("features."):]: v for k, v in state_dict.items() if k.startswith("features.")}
        if not sd:
            sd = dict(state_dict)
        want = feats.state_dict()
        missing = [k for k in want if k not in sd]
        if missing:
            raise DiganError(f"VGG16 weights lack '{missing[0]}'; pass torchvision's vgg16-397923af.pth")
        for k, v in want.items():
            if tuple(sd[k].shape) != tuple(v.shape):
                raise DiganError(f"VGG16 weight '{k}' has shape {tuple(sd[k].shape)}, expected {tuple(v.shape)}; pass torchvision's vgg16 weights")
        feats.load_state_dict({k: sd[k] for k in want})
        self.slices = nn.ModuleList()
        start = 0
        for end in _SLICE_ENDS[: max(layers) + 1]:
            self.slices.append(nn.Sequential(*[feats[i] for i in range(start, end + 1)]))
            start = end + 1
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()
        self.layers = tuple(layers)
        self.n_scale = n_scale
        self.loss_type = loss_type
        self.register_buffer("mean_rgb", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std_rgb", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> "VGG16Perceptual":  # always frozen
        return super().train(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations at every slice end (relu1_2, ...) for images in [-1,1]."""
        f = ((x + 1) / 2 - self.mean_rgb) / self.std_rgb
        out = []
        for s in self.slices:
            f = s(f)
            out.append(f)
        return out

    def _dist(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        if self.loss_type == "cosine":
            return (F.normalize(f1, dim=1) - F.normalize(f2, dim=1)).pow(2).sum(1, keepdim=True)
        if self.loss_type == "l1":
            return (f1 - f2).abs()
        return (f1 - f2).pow(2)

    def forward(self, a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = torch.cat([a, b], 0)
        n = a.shape[0]
        losses = []
        for s in range(self.n_scale):
            if s > 0:
                x = F.avg_pool2d(x, 2)
            feats = self.features(x)
            for i in self.layers:
                losses.append(_masked_mean(self._dist(feats[i][:n], feats[i][n:]), mask))
        return sum(losses) / len(losses)


class LaplacianPyramidLoss(nn.Module):
    """Weight-free fallback: mean over levels of the L1 between Laplacian pyramids (see module doc)."""

    def __init__(self, n_scale: int = 3):
        super().__init__()
        self.n_scale = n_scale
        k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
        k = k[:, None] * k[None, :]
        self.register_buffer("kernel", (k / k.sum()).view(1, 1, 5, 5))

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        mode = "reflect" if min(x.shape[-2:]) > 2 else "replicate"
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode=mode), self.kernel.to(x.dtype).expand(c, 1, 5, 5), groups=c)

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Band-pass levels (finest first) then the low-pass residual."""
        levels = []
        cur = x
        for _ in range(self.n_scale):
            if min(cur.shape[-2:]) < 2:
                break
            down = F.avg_pool2d(self._blur(cur), 2)
            up = F.interpolate(down, size=cur.shape[-2:], mode="bilinear", align_corners=False)
            levels.append(cur - up)
            cur = down
        levels.append(cur)
        return levels

    def forward(self, a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        pa, pb = self.pyramid(a), self.pyramid(b)
        losses = [_masked_mean((x - y).abs(), mask) for x, y in zip(pa, pb)]
        return sum(losses) / len(losses)


def build_perceptual(kind: str = "auto", path: str | None = None, n_scale: int = 3) -> tuple[nn.Module | None, dict[str, Any]]:
    """Build the perceptual loss; returns (module or None, info stored in run.json)."""
    if kind == "none":
        return None, {"perceptual": "none"}
    if kind not in ("auto", "vgg16", "laplacian_pyramid"):
        raise DiganError(f"unknown perceptual loss {kind!r}; choose auto, vgg16, laplacian_pyramid or none")
    if kind in ("auto", "vgg16"):
        p = find_vgg16_weights(path)
        if p is not None:
            from digan.utils.io import load_torch

            sd = load_torch(p, what="VGG16 weights")
            return VGG16Perceptual(sd, n_scale=n_scale), {"perceptual": "vgg16", "weights": str(p)}
        if kind == "vgg16":
            raise MissingAssetError(
                "VGG16 weights", str(Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE),
                "copy torchvision's vgg16-397923af.pth there or set loss.perceptual_path",
            )
        reason = f"VGG16 weights not found in {Path(torch.hub.get_dir()) / 'checkpoints'}"
        warnings.warn(f"{reason}; using the weight-free Laplacian-pyramid L1 as the perceptual term", stacklevel=2)
        return LaplacianPyramidLoss(n_scale), {"perceptual": "laplacian_pyramid", "reason": reason}
    return LaplacianPyramidLoss(n_scale), {"perceptual": "laplacian_pyramid"}
