"""The edge-gradient filter (DIGAN's custom autograd function; LiftedGAN's ``ContourGradientClip``).

Forward: identity. Backward: the incoming gradient ``g`` is kept only where the support of the
gradient is locally flat::

    m    = 1[g != 0]                         (where a gradient arrives at all)
    lap  = Laplacian(m)                      kernel [[0,-1,0],[-1,4,-1],[0,-1,0]] / 4, reflect padding
    keep = 1[|lap| < eps]                    eps = 1e-5
    g'   = g * keep

The DIGAN paper calls the kept positions "edges"; mathematically they are the pixels *not* on the
boundary of the gradient's support: the rasteriser produces spurious gradients along silhouettes
and occlusion boundaries, and this filter removes them. We apply it to the canonical depth map
before rendering (as LiftedGAN does) by default; the texture/albedo can be filtered too (config
``model.grad_filter``). The Laplacian is applied per channel; a (B,H,W) input is treated as one
channel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["LAPLACIAN_KERNEL", "laplacian", "EdgeGradientFilter", "edge_gradient_filter", "edge_keep_mask"]

LAPLACIAN_KERNEL = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]]) / 4.0


def laplacian(x: torch.Tensor, padding: str = "reflect") -> torch.Tensor:
    """Discrete Laplacian (kernel above) of (B,C,H,W), per channel, with reflect padding."""
    c = x.shape[1]
    k = LAPLACIAN_KERNEL.to(device=x.device, dtype=x.dtype).view(1, 1, 3, 3).expand(c, 1, 3, 3)
    xp = F.pad(x, (1, 1, 1, 1), mode=padding)
    return F.conv2d(xp, k, groups=c)


def edge_keep_mask(grad: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Float mask of the positions whose gradient the filter keeps (same shape as ``grad``)."""
    squeeze = grad.dim() == 3
    g = grad.unsqueeze(1) if squeeze else grad
    m = (g != 0).to(g.dtype if g.is_floating_point() else torch.float32)
    keep = (laplacian(m).abs() < eps).to(m.dtype)
    return keep.squeeze(1) if squeeze else keep


class EdgeGradientFilter(torch.autograd.Function):
    """``y = x``; ``dL/dx = dL/dy * keep(dL/dy)`` (see module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
        ctx.eps = eps
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * edge_keep_mask(grad, ctx.eps), None


def edge_gradient_filter(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Apply :class:`EdgeGradientFilter` to (B,H,W) or (B,C,H,W) ``x``."""
    return EdgeGradientFilter.apply(x, eps)
