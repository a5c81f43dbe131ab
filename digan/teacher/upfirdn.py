"""FIR up/down-sampling (``upfirdn2d``) written with standard PyTorch ops.

StyleGAN2 resamples with the separable ``[1, 3, 3, 1]`` FIR filter. The reference
implementations ship a compiled CUDA kernel; here everything is ``F.pad`` / ``F.conv2d`` /
strided slicing, so CPU and GPU share one code path and nothing is compiled.

Semantics (identical to rosinality's ``upfirdn2d`` and NVIDIA's ``upfirdn2d`` with
``flip_filter=False``), per spatial axis:

1. **up**: insert ``up - 1`` zeros *after* every input sample (length ``H * up``);
2. **pad**: pad with ``pad0`` zeros before and ``pad1`` after (negative values crop);
3. **FIR**: true convolution with ``kernel`` (correlation with the flipped kernel), "valid" mode;
4. **down**: keep every ``down``-th sample starting at index 0.

Output length: ``(H * up + pad0 + pad1 - k + down) // down``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["make_kernel", "upfirdn2d", "fir_filter"]


def make_kernel(k: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """A normalised 2D FIR kernel (sums to 1); a 1D kernel becomes its outer product."""
    t = torch.as_tensor(k, dtype=torch.float32)
    if t.ndim == 1:
        t = t[None, :] * t[:, None]
    return t / t.sum()


def _pad4(pad: Sequence[int] | int) -> tuple[int, int, int, int]:
    """(px0, px1, py0, py1) from an int, a (p0, p1) pair (both axes) or a 4-tuple."""
    if isinstance(pad, int):
        return pad, pad, pad, pad
    pad = tuple(int(p) for p in pad)
    if len(pad) == 2:
        return pad[0], pad[1], pad[0], pad[1]
    if len(pad) == 4:
        return pad  # type: ignore[return-value]
    raise ValueError(f"pad must have 1, 2 or 4 entries, got {pad}")


def fir_filter(x: torch.Tensor, kernel: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """Depthwise "valid" true convolution of every channel of ``x`` (B,C,H,W) with ``kernel``.

    ``stride`` > 1 keeps every ``stride``-th output (the *down* step), computed directly by the
    strided convolution rather than by slicing a full-resolution result.
    """
    c = x.shape[1]
    kh, kw = kernel.shape
    w = kernel.flip([0, 1]).to(dtype=x.dtype, device=x.device)
    w = w.view(1, 1, kh, kw).expand(c, 1, kh, kw)
    return F.conv2d(x, w, stride=stride, groups=c)


def upfirdn2d(
    x: torch.Tensor,
    kernel: torch.Tensor,
    up: int = 1,
    down: int = 1,
    pad: Sequence[int] | int = (0, 0),
) -> torch.Tensor:
    """Upsample by zero insertion, pad, FIR-filter and downsample ``x`` (B,C,H,W).

    ``kernel`` is a 2D tensor (kh, kw); ``pad`` is ``(pad0, pad1)`` for both axes or
    ``(px0, px1, py0, py1)``. See the module docstring for the exact semantics.
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects a (B,C,H,W) tensor, got shape {tuple(x.shape)}")
    px0, px1, py0, py1 = _pad4(pad)
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    if max(px0, px1, py0, py1) > 0:
        x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    if min(px0, px1, py0, py1) < 0:
        x = x[
            :,
            :,
            max(-py0, 0): x.shape[2] - max(-py1, 0),
            max(-px0, 0): x.shape[3] - max(-px1, 0),
        ]
    return fir_filter(x, kernel, stride=down)
