"""Optional PyTorch3D rasterization backend (used only when ``import pytorch3d`` works).

Maps our screen space to PyTorch3D's NDC convention and calls
``pytorch3d.renderer.mesh.rasterize_meshes`` (hard rasterization: ``blur_radius=0``,
``faces_per_pixel=1``, no back-face culling). PyTorch3D NDC has +x to the left and +y up, with
the centre of pixel (row i, column j) of a square ``S x S`` image at
``x = 1 - (2 j + 1) / S``, ``y = 1 - (2 i + 1) / S``; so our ``(u, v, z)`` becomes
``(1 - (2u + 1) / S, 1 - (2v + 1) / S, z)``. The depth ``z`` is passed unchanged so that
PyTorch3D's perspective correction and z-buffer use the camera depth, as ours do.

Only the visibility (``pix_to_face``) is taken from PyTorch3D; barycentrics and depth of the
winning faces are then computed by :func:`digan.render.rasterize.fragments_from_pix_to_face`,
which gives the same values and gradients as PyTorch3D's backward pass (both differentiate the
same closed-form barycentrics). ``bary_coords`` and ``zbuf`` from PyTorch3D are returned by
:func:`rasterize_pytorch3d_raw` for comparison.
"""

from __future__ import annotations

import torch

from digan.render.rasterize import Fragments, fragments_from_pix_to_face

__all__ = ["pytorch3d_available", "rasterize_pytorch3d", "rasterize_pytorch3d_raw"]


def pytorch3d_available() -> bool:
    """True when ``pytorch3d`` and its mesh rasterizer import."""
    try:
        import pytorch3d  # noqa: F401
        from pytorch3d.renderer.mesh import rasterize_meshes  # noqa: F401
        from pytorch3d.structures import Meshes  # noqa: F401
    except Exception:
        return False
    return True


def _to_ndc(screen: torch.Tensor, image_size: int) -> torch.Tensor:
    s = float(image_size)
    x = 1.0 - (2.0 * screen[..., 0] + 1.0) / s
    y = 1.0 - (2.0 * screen[..., 1] + 1.0) / s
    return torch.stack([x, y, screen[..., 2]], dim=-1)


def rasterize_pytorch3d_raw(
    screen: torch.Tensor,
    faces: torch.Tensor,
    image_size: int,
    perspective_correct: bool = True,
    face_mask: torch.Tensor | None = None,
    bin_size: int | None = None,
    max_faces_per_bin: int | None = None,
):
    """PyTorch3D's own ``(pix_to_face, zbuf, bary_coords)`` for our screen vertices, with
    ``pix_to_face`` converted from packed to per-mesh face indices and K=1 squeezed."""
    from pytorch3d.renderer.mesh import rasterize_meshes
    from pytorch3d.structures import Meshes

    b = screen.shape[0]
    nf = faces.shape[0]
    faces = faces.to(screen.device).long()
    face_list = []
    for i in range(b):
        f = faces
        if face_mask is not None:
            # masked faces become degenerate (zero area), which PyTorch3D never rasterizes
            f = torch.where(face_mask[i].to(torch.bool)[:, None], faces, torch.zeros_like(faces))
        face_list.append(f)
    verts = _to_ndc(screen, image_size)
    meshes = Meshes(verts=list(verts), faces=face_list)
    p2f, zbuf, bary, _ = rasterize_meshes(
        meshes,
        image_size=image_size,
        blur_radius=0.0,
        faces_per_pixel=1,
        bin_size=bin_size,
        max_faces_per_bin=max_faces_per_bin,
        perspective_correct=perspective_correct,
        cull_backfaces=False,
    )
    p2f = p2f[..., 0]
    offs = (torch.arange(b, device=p2f.device) * nf).view(b, 1, 1)
    p2f = torch.where(p2f >= 0, p2f - offs, p2f)
    return p2f, zbuf[..., 0], bary[..., 0, :]


def rasterize_pytorch3d(
    screen: torch.Tensor,
    faces: torch.Tensor,
    image_size: int,
    perspective_correct: bool = True,
    face_mask: torch.Tensor | None = None,
    bin_size: int | None = None,
    max_faces_per_bin: int | None = None,
) -> Fragments:
    """Same contract as :func:`digan.render.rasterize.rasterize`, visibility from PyTorch3D."""
    with torch.no_grad():
        p2f, _, _ = rasterize_pytorch3d_raw(
            screen.detach(), faces, image_size, perspective_correct, face_mask, bin_size, max_faces_per_bin
        )
    return fragments_from_pix_to_face(screen, faces.to(screen.device).long(), p2f.long(), perspective_correct)
