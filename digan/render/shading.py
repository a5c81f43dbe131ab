"""Surface normals from depth-map meshes and Lambertian shading.

Normal convention (identical to Unsup3d and LiftedGAN, so their light predictions and normal
maps read the same here): on the point grid ``P[i, j]`` of a depth map,

    n = normalize((P[i, j+1] - P[i, j-1]) x (P[i+1, j] - P[i-1, j]))

with the cross product in camera coordinates (x right, y down, z forward). For a surface that
faces the camera this gives ``n_z > 0``, i.e. ``n`` is the *inward* normal (minus the outward
one). Border pixels copy their nearest interior neighbour's normal.

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

from digan.render.camera import depth_to_points
from digan.render.types import Light

__all__ = ["normals_from_points", "normals_from_depth", "lambertian_shading", "apply_shading"]

_EPS = 1e-20


def normals_from_points(points: torch.Tensor) -> torch.Tensor:
    """Unit normals (B,3,H,W) of a point grid (B,H,W,3) by central differences (module docstring)."""
    tu = points[:, 1:-1, 2:] - points[:, 1:-1, :-2]
    tv = points[:, 2:, 1:-1] - points[:, :-2, 1:-1]
    n = torch.linalg.cross(tu, tv, dim=-1).permute(0, 3, 1, 2)
    n = F.pad(n, (1, 1, 1, 1), mode="replicate")
    # the raw cross product is tiny (~(2 d / f)^2 ~ 5e-5 at 64 px), so the guard must be far
    # smaller than Unsup3d's additive 1e-7, which biases n_z by ~0.2%
    return n / n.norm(dim=1, keepdim=True).clamp_min(_EPS)


def normals_from_depth(depth: torch.Tensor, fov: float) -> torch.Tensor:
    """Unit normals (B,3,S,S) of a depth map (B,1,S,S) under the camera of :mod:`digan.render.camera`."""
    return normals_from_points(depth_to_points(depth, fov))


def lambertian_shading(normal: torch.Tensor, light: Light) -> torch.Tensor:
    """``ambient + diffuse * max(0, n . l)`` (B,1,H,W) for normals (B,3,H,W)."""
    l = light.unit_direction().to(normal.dtype)
    ndotl = (normal * l[:, :, None, None]).sum(1, keepdim=True).clamp(min=0)
    return light.ambient.to(normal.dtype).view(-1, 1, 1, 1) + light.diffuse.to(normal.dtype).view(-1, 1, 1, 1) * ndotl


def apply_shading(albedo: torch.Tensor, shading: torch.Tensor) -> torch.Tensor:
    """Shade an albedo in [-1, 1]: ``((albedo + 1) / 2 * shading) * 2 - 1``."""
    return (albedo * 0.5 + 0.5) * shading * 2.0 - 1.0
