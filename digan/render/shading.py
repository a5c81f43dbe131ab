"""Surface normals from depth-map meshes and Lambertian shading.

Normal convention (identical to Unsup3d and LiftedGAN, so their light predictions and normal
maps read the same here): on the point grid ``P[i, j]`` of a depth map,

    n = normalize((P[i, j+1] - P[i, j-1]) x (P[i+1, j] - P[i-1, j]))

with the cross product in camera coordinates (x right, y down, z forward). For a surface that
faces the camera this gives ``n_z > 0``, i.e. ``n`` is the *inward* normal (minus the outward
one). Border pixels copy their nearest interior neighbour's normal.

Normalisation (``normalize``, the renderer's ``normal_norm`` config value):

* ``"unit"`` (DIGAN's default): ``n / max(|n|, 1e-20)``, exact unit normals.
* ``"liftedgan"``: ``n / (|n| + 1e-7)``, as LiftedGAN's (and Unsup3d's) ``get_normal_from_depth``;
  the ``liftgan`` baseline uses it so official checkpoints reproduce LiftedGAN's outputs.

The raw cross product is tiny: for a fronto-parallel surface at depth ``d`` it is
``|n| = (2 d / f)^2`` with ``f = (S - 1) / 2 / tan(fov / 2)``, i.e. 3.09e-5 at 64 px, 7.6e-6 at
128 px and 1.88e-6 at 256 px (fov 10 deg, d = 1). LiftedGAN's additive 1e-7 therefore shortens
every normal by ``1e-7 / (|n| + 1e-7)``: a flat surface gets ``n_z`` = 0.99677 at 64 px (0.3 %),
0.98700 at 128 px (1.3 %), 0.94958 at 256 px (5.0 %) and 0.82 at 512 px (test:
``tests/test_trust_liftedgan.py``); the diffuse shading, and so the de-lit albedo, move by the same
factor (the issue that introduced this measured albedo differences up to 0.125 in [-1, 1] at
256 px). Nearer or more oblique surfaces have a larger ``|n|`` and a smaller shortfall.

Shading: ``ambient + diffuse * max(0, n . l)`` with ``l = normalize(dx, dy, 1)`` (see
:class:`digan.render.types.Light`). ``l = (0, 0, 1)`` is a frontal light (from the camera). With
the inward normal above, the physical direction toward the light is ``(-dx, -dy, -1)`` in
camera coordinates: ``dx > 0`` lights the surfaces that face image -x (left) and ``dy > 0`` those
that face image -y (up). This is exactly the light parameterisation of Unsup3d / LiftedGAN.

Colour: images are in [-1, 1]; the shaded image is ``((albedo + 1) / 2 * shading) * 2 - 1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from digan.errors import DiganError
from digan.render.camera import depth_to_points
from digan.render.types import Light

__all__ = ["normals_from_points", "normals_from_depth", "lambertian_shading", "apply_shading"]

_EPS = 1e-20
#: LiftedGAN's / Unsup3d's additive guard in ``n / (|n| + eps)``
LIFTEDGAN_NORMAL_EPS = 1e-7
NORMAL_NORMS = ("unit", "liftedgan")


def normals_from_points(points: torch.Tensor, normalize: str = "unit") -> torch.Tensor:
    """Normals (B,3,H,W) of a point grid (B,H,W,3) by central differences; ``normalize`` is
    ``"unit"`` or ``"liftedgan"`` (module docstring: the two differ by 0.3 % at 64 px, 5 % at 256 px)."""
    tu = points[:, 1:-1, 2:] - points[:, 1:-1, :-2]
    tv = points[:, 2:, 1:-1] - points[:, :-2, 1:-1]
    n = torch.linalg.cross(tu, tv, dim=-1).permute(0, 3, 1, 2)
    n = F.pad(n, (1, 1, 1, 1), mode="replicate")
    if normalize == "unit":
        # |n| is tiny (3.1e-5 at 64 px, 1.9e-6 at 256 px), so the guard must be far below it
        return n / n.norm(dim=1, keepdim=True).clamp_min(_EPS)
    if normalize == "liftedgan":
        return n / (n.norm(dim=1, keepdim=True) + LIFTEDGAN_NORMAL_EPS)
    raise DiganError(f"unknown normal normalisation {normalize!r}; choose unit (DIGAN) or liftedgan")


def normals_from_depth(depth: torch.Tensor, fov: float, normalize: str = "unit") -> torch.Tensor:
    """Normals (B,3,S,S) of a depth map (B,1,S,S) under the camera of :mod:`digan.render.camera`
    (``normalize``: see :func:`normals_from_points`)."""
    return normals_from_points(depth_to_points(depth, fov), normalize)


def lambertian_shading(normal: torch.Tensor, light: Light) -> torch.Tensor:
    """``ambient + diffuse * max(0, n . l)`` (B,1,H,W) for normals (B,3,H,W)."""
    l = light.unit_direction().to(normal.dtype)
    ndotl = (normal * l[:, :, None, None]).sum(1, keepdim=True).clamp(min=0)
    return light.ambient.to(normal.dtype).view(-1, 1, 1, 1) + light.diffuse.to(normal.dtype).view(-1, 1, 1, 1) * ndotl


def apply_shading(albedo: torch.Tensor, shading: torch.Tensor) -> torch.Tensor:
    """Shade an albedo in [-1, 1]: ``((albedo + 1) / 2 * shading) * 2 - 1``."""
    return (albedo * 0.5 + 0.5) * shading * 2.0 - 1.0
