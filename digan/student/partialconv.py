"""Partial convolution (Liu et al., "Image Inpainting for Irregular Holes Using Partial
Convolutions", ECCV 2018), used by DIGAN's depth network DS.

For an input ``x`` and a binary mask ``m`` (1 = valid) the layer computes, per output position,

    y = W^T (x * m)_window * (window_size / sum(m_window)) + b     if sum(m_window) > 0
    y = 0                                                            otherwise

and the updated mask ``m' = 1[sum(m_window) > 0]``. ``window_size`` is ``kh * kw`` for a
single-channel mask (broadcast over the input channels) and ``C_in * kh * kw`` for a per-channel
mask, as in the reference implementation.

Which mask DIGAN uses is not stated in the paper. We use an **all-ones input mask** (``mask=None``):
inside the image partial conv then equals a plain convolution, and at the borders it re-weights
the zero padding away ("partial convolution based padding", Liu et al. 2018b), which removes the
dark/bright border artefacts that zero padding leaves in generated depth maps. A foreground mask
can be passed explicitly (``forward(x, mask)``) for experiments.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["PartialConv2d", "conv2d_layer"]


class PartialConv2d(nn.Conv2d):
    """Mask-aware :class:`torch.nn.Conv2d`; same constructor plus ``multi_channel`` (per-channel masks).

    ``forward(x, mask=None, return_mask=False)``: ``mask`` is (B,1,H,W) (or (B,C,H,W) with
    ``multi_channel``); ``None`` means all ones. Returns the output, or (output, updated mask).
    """

    def __init__(self, *args, multi_channel: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.multi_channel = multi_channel
        kh, kw = self.kernel_size
        self.window = float(kh * kw * (self.in_channels if multi_channel else 1))
        self._ratio_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _mask_stats(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ratio, updated mask) for a mask; both (B or 1, 1, H', W')."""
        ones = torch.ones(1, mask.shape[1], *self.kernel_size, device=mask.device, dtype=mask.dtype)
        with torch.no_grad():
            count = F.conv2d(mask, ones, stride=self.stride, padding=self.padding, dilation=self.dilation)
            if self.multi_channel is False and mask.shape[1] != 1:
                raise ValueError("single-channel PartialConv2d needs a (B,1,H,W) mask")
            updated = (count > 0).to(mask.dtype)
            ratio = self.window / count.clamp(min=1e-8) * updated
        return ratio, updated

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, return_mask: bool = False):
        if mask is None:
            key = (x.shape[-2], x.shape[-1], x.device, x.dtype)
            if key not in self._ratio_cache:
                ch = self.in_channels if self.multi_channel else 1
                self._ratio_cache[key] = self._mask_stats(torch.ones(1, ch, x.shape[-2], x.shape[-1], device=x.device, dtype=x.dtype))
            ratio, updated = self._ratio_cache[key]
            xm = x
        else:
            mask = mask.to(x.dtype)
            ratio, updated = self._mask_stats(mask)
            xm = x * mask
        raw = F.conv2d(xm, self.weight, None, self.stride, self.padding, self.dilation, self.groups)
        out = raw * ratio
        if self.bias is not None:
            out = (out + self.bias.view(1, -1, 1, 1)) * updated
        if return_mask:
            return out, updated.expand(x.shape[0], -1, -1, -1) if mask is None else updated
        return out

    def _apply(self, fn, *args, **kwargs):  # drop cached ratios when moving device/dtype
        self._ratio_cache = {}
        return super()._apply(fn, *args, **kwargs)


def conv2d_layer(partial: bool, cin: int, cout: int, kernel_size: int, padding: int, bias: bool = False) -> nn.Conv2d:
    """A stride-1 conv: :class:`PartialConv2d` (all-ones mask) when ``partial`` else plain ``nn.Conv2d``.

    The switch behind the ``plain_conv`` ablation; both have identical parameters, so checkpoints
    of either kind load into the other.
    """
    cls = PartialConv2d if partial else nn.Conv2d
    return cls(cin, cout, kernel_size=kernel_size, stride=1, padding=padding, bias=bias)
