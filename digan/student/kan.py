"""B-spline Kolmogorov-Arnold layers (``KANLinear``) used by DIGAN's view and light networks.

The maths follows efficient-kan (Blealtan): each output is

    y_o = sum_i  W_base[o, i] * silu(x_i)  +  sum_i  s[o, i] * sum_k  c[o, i, k] * B_k(x_i)

where ``B_k`` are the B-spline bases of order ``spline_order`` (3 = cubic) on a uniform grid of
``grid_size`` intervals over ``grid_range`` extended by ``spline_order`` knots on each side, and
``s`` is the optional standalone spline scaler. There is no bias (as in efficient-kan).

The bases are evaluated by the Cox-de Boor recursion; ``tests/test_student_modules.py`` checks them
against :class:`scipy.interpolate.BSpline`. The spline branch is only non-zero for inputs inside
the extended grid ``[lo - k*h, hi + k*h]`` and is a full partition of unity only inside
``[lo, hi]``: callers must feed normalised inputs (DIGAN's DV/DL standardise w with the teacher's
w statistics first, see :mod:`digan.student.networks`).

Initialisation (our choice, efficient-kan fits the spline coefficients to small noise by least
squares): base weights Kaiming-uniform like :class:`torch.nn.Linear`; spline coefficients
uniform noise of amplitude ``scale_noise / grid_size``; spline scaler Kaiming-uniform.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["uniform_knots", "b_spline_bases", "KANLinear"]


def uniform_knots(grid_size: int, spline_order: int, grid_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    """The ``grid_size + 2*spline_order + 1`` uniform knots of the extended grid."""
    lo, hi = float(grid_range[0]), float(grid_range[1])
    h = (hi - lo) / grid_size
    return torch.arange(-spline_order, grid_size + spline_order + 1, dtype=torch.float32) * h + lo


def b_spline_bases(x: torch.Tensor, knots: torch.Tensor, order: int) -> torch.Tensor:
    """B-spline basis functions of degree ``order`` at ``x`` by the Cox-de Boor recursion.

    Args:
        x: (N, F) inputs.
        knots: (F, K) or (K,) non-decreasing knots (``K = n_bases + order + 1``).
        order: spline degree (3 for cubic).

    Returns:
        (N, F, K - order - 1) basis values. Degree-0 bases are half-open ``[t_j, t_{j+1})``.
    """
    if knots.dim() == 1:
        knots = knots.unsqueeze(0).expand(x.shape[1], -1)
    t = knots.to(dtype=x.dtype, device=x.device)
    xx = x.unsqueeze(-1)  # (N, F, 1)
    bases = ((xx >= t[:, :-1]) & (xx < t[:, 1:])).to(x.dtype)  # (N, F, K-1)
    for k in range(1, order + 1):
        left = (xx - t[:, : -(k + 1)]) / (t[:, k:-1] - t[:, : -(k + 1)])
        right = (t[:, k + 1:] - xx) / (t[:, k + 1:] - t[:, 1:-k])
        bases = left * bases[..., :-1] + right * bases[..., 1:]
    return bases.contiguous()


class KANLinear(nn.Module):
    """KAN layer: SiLU base branch plus B-spline branch, mapping (..., in_features) -> (..., out_features).

    Args:
        in_features, out_features: sizes.
        grid_size: number of grid intervals over ``grid_range`` (efficient-kan default 5).
        spline_order: B-spline degree (default 3).
        grid_range: range covered by the full partition of unity (default [-1, 1]).
        scale_noise: amplitude of the initial spline coefficients (times 1/grid_size).
        standalone_scale_spline: learn a per-edge scaler ``s`` of the spline branch.
        base_activation: module class of the base branch (default SiLU).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: tuple[float, float] = (-1.0, 1.0),
        scale_noise: float = 0.1,
        scale_base: float = 1.0,
        scale_spline: float = 1.0,
        standalone_scale_spline: bool = True,
        base_activation: type[nn.Module] = nn.SiLU,
    ):
        super().__init__()
        if grid_size < 1 or spline_order < 0:
            raise ValueError("grid_size must be >= 1 and spline_order >= 0")
        self.in_features = in_features
        self.out_features = out_features
        self.grid_size = grid_size
        self.spline_order = spline_order
        self.grid_range = (float(grid_range[0]), float(grid_range[1]))
        self.register_buffer("grid", uniform_knots(grid_size, spline_order, grid_range).expand(in_features, -1).contiguous())
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.spline_weight = nn.Parameter(torch.empty(out_features, in_features, grid_size + spline_order))
        self.standalone_scale_spline = standalone_scale_spline
        if standalone_scale_spline:
            self.spline_scaler = nn.Parameter(torch.empty(out_features, in_features))
        self.scale_noise = scale_noise
        self.scale_base = scale_base
        self.scale_spline = scale_spline
        self.base_activation = base_activation()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5) * self.scale_base)
        with torch.no_grad():
            amp = self.scale_noise / self.grid_size
            self.spline_weight.uniform_(-amp / 2, amp / 2)
            if self.standalone_scale_spline:
                nn.init.kaiming_uniform_(self.spline_scaler, a=math.sqrt(5) * self.scale_spline)
            else:
                self.spline_weight.mul_(self.scale_spline)

    def bases(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_features) -> (N, in_features, grid_size + spline_order) spline bases."""
        return b_spline_bases(x, self.grid, self.spline_order)

    @property
    def scaled_spline_weight(self) -> torch.Tensor:
        if self.standalone_scale_spline:
            return self.spline_weight * self.spline_scaler.unsqueeze(-1)
        return self.spline_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)
        base = F.linear(self.base_activation(x2), self.base_weight)
        spline = F.linear(self.bases(x2).reshape(x2.shape[0], -1), self.scaled_spline_weight.reshape(self.out_features, -1))
        return (base + spline).reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"{self.in_features}, {self.out_features}, grid_size={self.grid_size}, "
                f"spline_order={self.spline_order}, grid_range={self.grid_range}")
