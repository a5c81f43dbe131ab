"""Camera model, depth-map meshes and rigid view transforms (pure PyTorch, batched).

Camera (Unsup3d / LiftedGAN / DIGAN): pinhole at the origin looking down +z, image x to the
right, image y down, square images of ``S x S`` pixels, field of view ``fov`` degrees across the
image, focal length ``f = (S - 1) / 2 / tan(fov / 2)`` and principal point ``c = (S - 1) / 2``.
Pixel ``(row i, column j)`` has its centre at image coordinates ``(u, v) = (j, i)``; depth is the
camera-space ``z``. A depth map is unprojected to one vertex per pixel::

    X = (u - c) * d / f,   Y = (v - c) * d / f,   Z = d

and meshed with two triangles per pixel quad (:func:`grid_faces`).

Views (see :mod:`digan.render.types`): ``rotation = (pitch, yaw, roll)`` in degrees,
``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` applied about the pivot ``(0, 0, pivot_depth)``, then the
translation is added::

    P' = R (P - p) + p + t

Signs: every positive angle moves a point in front of the pivot (the nose, ``z < pivot``) toward
the positive image axis of the rotation: positive **yaw** moves the nose toward image +x (right),
positive **pitch** toward image +y (down, the head nods), positive **roll** turns image +x toward
image +y (clockwise on screen). ``Rx`` and ``Rz`` are the right-handed rotations of the camera
frame; ``Ry(yaw)`` is the right-handed rotation by ``-yaw`` (a right-handed +yaw would move the
nose to the left). Pixel-space translation: ``t = (tx, ty, tz)`` in camera units (the image plane
at depth 1 spans ``+-tan(fov/2) = +-0.0875`` for fov 10).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from digan.render.types import View

__all__ = [
    "focal_length",
    "pixel_grid",
    "depth_to_points",
    "project_points",
    "grid_faces",
    "rotation_matrix",
    "view_to_matrices",
    "transform_points",
    "blend_vertices",
]


def focal_length(image_size: int, fov: float) -> float:
    """Focal length in pixels: ``(S - 1) / 2 / tan(fov / 2)`` (fov in degrees)."""
    return (image_size - 1) / 2.0 / math.tan(math.radians(fov) / 2.0)


def pixel_grid(h: int, w: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """``(u, v)`` pixel-centre coordinates, each (H, W): ``u`` = column index, ``v`` = row index."""
    v, u = torch.meshgrid(
        torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype), indexing="ij"
    )
    return u, v


def depth_to_points(depth: torch.Tensor, fov: float) -> torch.Tensor:
    """Unproject a depth map (B,1,S,S) or (B,S,S) to camera-space points (B,S,S,3)."""
    if depth.ndim == 4:
        depth = depth[:, 0]
    b, h, w = depth.shape
    f = focal_length(w, fov)
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    u, v = pixel_grid(h, w, depth.device, depth.dtype)
    x = (u - cx) / f * depth
    y = (v - cy) / f * depth
    return torch.stack([x, y, depth], dim=-1)


def project_points(points: torch.Tensor, image_size: int, fov: float) -> torch.Tensor:
    """Camera-space points (..., 3) -> screen ``(u, v, z)`` (..., 3) in pixel units; z is kept."""
    f = focal_length(image_size, fov)
    c = (image_size - 1) / 2.0
    z = points[..., 2]
    # guard only the division; points at z <= 0 are culled by the rasterizer
    zs = torch.where(z.abs() < 1e-8, torch.full_like(z, 1e-8), z)
    u = f * points[..., 0] / zs + c
    v = f * points[..., 1] / zs + c
    return torch.stack([u, v, z], dim=-1)


@lru_cache(maxsize=16)
def _grid_faces_cpu(h: int, w: int) -> torch.Tensor:
    idx = torch.arange(h * w).reshape(h, w)
    v00 = idx[:-1, :-1].reshape(-1)
    v01 = idx[:-1, 1:].reshape(-1)
    v10 = idx[1:, :-1].reshape(-1)
    v11 = idx[1:, 1:].reshape(-1)
    upper = torch.stack([v00, v10, v01], dim=1)  # top-left triangle of the quad
    lower = torch.stack([v01, v10, v11], dim=1)  # bottom-right triangle
    # interleave so that faces 2q and 2q+1 belong to quad q = i * (w - 1) + j
    return torch.stack([upper, lower], dim=1).reshape(-1, 3).contiguous()


def grid_faces(h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Triangles (2 (H-1)(W-1), 3) of the pixel-grid mesh, vertex index ``i * W + j``.

    Quad ``q = i * (W - 1) + j`` gives face ``2q`` = (v[i,j], v[i+1,j], v[i,j+1]) and face
    ``2q + 1`` = (v[i,j+1], v[i+1,j], v[i+1,j+1]) (the diagonal runs from bottom-left to top-right).
    """
    return _grid_faces_cpu(int(h), int(w)).to(device)


def rotation_matrix(rotation_deg: torch.Tensor) -> torch.Tensor:
    """(B,3) degrees (pitch, yaw, roll) -> (B,3,3) ``Rz(roll) @ Ry(yaw) @ Rx(pitch)``.

    See the module docstring for the signs (positive yaw moves the nose toward image +x).
    """
    r = torch.deg2rad(rotation_deg)
    ca, sa = torch.cos(r[:, 0]), torch.sin(r[:, 0])
    cb, sb = torch.cos(r[:, 1]), torch.sin(r[:, 1])
    cg, sg = torch.cos(r[:, 2]), torch.sin(r[:, 2])
    one, zero = torch.ones_like(ca), torch.zeros_like(ca)
    rx = torch.stack([one, zero, zero, zero, ca, -sa, zero, sa, ca], dim=1).view(-1, 3, 3)
    # right-handed rotation by -yaw about y
    ry = torch.stack([cb, zero, -sb, zero, one, zero, sb, zero, cb], dim=1).view(-1, 3, 3)
    rz = torch.stack([cg, -sg, zero, sg, cg, zero, zero, zero, one], dim=1).view(-1, 3, 3)
    return rz @ ry @ rx


def view_to_matrices(view: View) -> tuple[torch.Tensor, torch.Tensor]:
    """``(R (B,3,3), t (B,3))`` of a :class:`View`."""
    return rotation_matrix(view.rotation), view.translation


def transform_points(points: torch.Tensor, view: View, pivot_depth: float = 1.0) -> torch.Tensor:
    """Apply a view to points (B,...,3): ``R (P - p) + p + t`` with pivot ``p = (0, 0, pivot_depth)``."""
    b = points.shape[0]
    rot, trans = view_to_matrices(view)
    rot = rot.to(points.dtype)
    trans = trans.to(points.dtype)
    flat = points.reshape(b, -1, 3)
    pivot = flat.new_tensor([0.0, 0.0, pivot_depth])
    out = (flat - pivot) @ rot.transpose(1, 2) + pivot + trans[:, None, :]
    return out.reshape(points.shape)


def blend_vertices(posed: torch.Tensor, canonical: torch.Tensor, transform_map: torch.Tensor | None) -> torch.Tensor:
    """DIGAN/LiftedGAN transformation map: ``T * posed + (1 - T) * canonical`` per vertex.

    ``posed``/``canonical`` are (B,S,S,3) point grids, ``transform_map`` is (B,1,S,S) in [0, 1]
    (1 on the face so that it turns, 0 at the border so that the background stays still).
    """
    if transform_map is None:
        return posed
    t = transform_map[:, 0, :, :, None].to(posed.dtype)
    return t * posed + (1 - t) * canonical
