"""Optional PyTorch3D rasterization backend (used only when ``import pytorch3d`` works).

Maps our screen space to PyTorch3D's NDC convention and calls
``pytorch3d.renderer.mesh.rasterize_meshes`` (hard rasterization, ``faces_per_pixel=1``, no
back-face culling). PyTorch3D NDC has +x to the left and +y up, with the centre of pixel
(row i, column j) of a square ``S x S`` image at ``x = 1 - (2 j + 1) / S``,
``y = 1 - (2 i + 1) / S``; so our ``(u, v, z)`` becomes ``(1 - (2u + 1) / S, 1 - (2v + 1) / S, z)``.
The depth ``z`` is passed unchanged so that PyTorch3D's perspective correction and z-buffer use
the camera depth, as ours do.

**Tie rule.** PyTorch3D's inside test is strict (all barycentrics ``> 0``), ours is closed (see
:mod:`digan.render.rasterize`). At the canonical view every pixel centre lies exactly on a mesh
vertex, so a plain PyTorch3D call draws almost nothing there (IoU 0.002-0.02 against the torch
backend). We make PyTorch3D use the same closed rule: a pixel counts as inside a face when its
distance to the face is below a tolerance, which is PyTorch3D's own ``blur_radius`` test
(``dist < blur_radius`` with ``dist`` the *squared* NDC distance; the face bounding boxes grow by
``sqrt(blur_radius)``). The tolerance, :func:`ndc_tie_tolerance`, is the torch backend's
(:func:`~digan.render.rasterize.tie_tolerance`, read as pixels) in NDC units, but at least
``5e-7``: float32 NDC coordinates near 1 are only exact to about ``1.2e-7``, so pixel centres on
a vertex miss it by that much. ``faces_per_pixel=1`` keeps the nearest such face, as our
z-buffer does; tied faces give the same values (module docstring of
:mod:`digan.render.rasterize`).

Only the visibility (``pix_to_face``) is taken from PyTorch3D; barycentrics and depth of the
winning faces are then computed by :func:`digan.render.rasterize.fragments_from_pix_to_face`,
which gives the same values and gradients as PyTorch3D's backward pass (both differentiate the
same closed-form barycentrics). ``bary_coords`` and ``zbuf`` from PyTorch3D are returned by
:func:`rasterize_pytorch3d_raw` for comparison; they differ from ours by PyTorch3D's ``1e-8``
added to the NDC area in its barycentrics (visible without perspective correction, where the
barycentrics are not renormalised: relative error ``1e-8 / area``).
"""

from __future__ import annotations

import functools

import torch

from digan.render.rasterize import Fragments, fragments_from_pix_to_face, tie_tolerance

__all__ = ["pytorch3d_available", "ndc_tie_tolerance", "rasterize_pytorch3d", "rasterize_pytorch3d_raw", "P3D_AREA_EPS"]

P3D_AREA_EPS = 1e-8  # PyTorch3D's kEpsilon, added to the NDC edge-function area of every face


def pytorch3d_available() -> bool:
    """True when ``pytorch3d`` and its mesh rasterizer import (probed once per process)."""
    return _probe_pytorch3d()


@functools.lru_cache(maxsize=1)
def _probe_pytorch3d() -> bool:
    try:
        import pytorch3d  # noqa: F401
        from pytorch3d.renderer.mesh import rasterize_meshes  # noqa: F401
        from pytorch3d.structures import Meshes  # noqa: F401
    except Exception:
        return False
    return True


def ndc_tie_tolerance(image_size: int) -> float:
    """NDC distance within which a pixel centre counts as inside a face (see the module docstring)."""
    return max(2.0 * tie_tolerance(image_size) / float(image_size), 5e-7)


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
    tie_tolerance_ndc: float | None = None,
):
    """PyTorch3D's own ``(pix_to_face, zbuf, bary_coords)`` for our screen vertices, with
    ``pix_to_face`` converted from packed to per-mesh face indices and K=1 squeezed.

    ``tie_tolerance_ndc``: see the module docstring; default :func:`ndc_tie_tolerance`, ``0``
    gives PyTorch3D's strict rule. Barycentrics are not clipped. Empty pixels have
    ``pix_to_face = -1``, ``zbuf = -1`` and barycentrics ``-1`` (PyTorch3D's convention).
    """
    from pytorch3d.renderer.mesh import rasterize_meshes
    from pytorch3d.structures import Meshes

    b = screen.shape[0]
    nf = faces.shape[0]
    faces = faces.to(screen.device).long()
    if face_mask is not None:
        # masked faces become degenerate (zero area), which PyTorch3D never rasterizes
        face_batch = torch.where(face_mask.to(torch.bool)[..., None], faces, torch.zeros_like(faces))
    else:
        face_batch = faces.expand(b, nf, 3)
    tol = ndc_tie_tolerance(image_size) if tie_tolerance_ndc is None else float(tie_tolerance_ndc)
    verts = _to_ndc(screen.float(), image_size)
    meshes = Meshes(verts=verts, faces=face_batch)
    p2f, zbuf, bary, _ = rasterize_meshes(
        meshes,
        image_size=image_size,
        blur_radius=tol * tol,
        faces_per_pixel=1,
        bin_size=bin_size,
        max_faces_per_bin=max_faces_per_bin,
        perspective_correct=perspective_correct,
        clip_barycentric_coords=False,
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
