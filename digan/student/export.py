"""Textured mesh export of the student's canonical depth + albedo: OBJ (+ MTL + PNG texture),
PLY (vertex colours) and GLB (binary glTF with the texture), loadable by Blender, MeshLab,
three.js viewers and trimesh.

Mesh: one vertex per depth pixel (the renderer's camera model, :func:`digan.render.depth_to_points`),
two triangles per pixel quad (:func:`digan.render.grid_faces`). Only faces whose three vertices lie
on the foreground (depth nearer than the background plane, ``border_depth - 0.01``) are kept, so
the flat backdrop and the 2-pixel side border are cropped away; unreferenced vertices are removed.

Coordinates: converted from the camera frame (x right, y down, z forward) to the usual viewer
frame (x right, y up, z toward the viewer): ``(x, -y, pivot - z)`` with pivot depth 1.0, so the
face is centred near the origin and its front faces +z; triangle winding is counter-clockwise seen
from the front. Units are the renderer's (the face is ~0.17 wide); ``scale`` multiplies them.
UVs: ``u = col / (S-1)``, ``v = 1 - row / (S-1)`` into the albedo texture.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from digan.errors import DiganError
from digan.render.camera import depth_to_points, grid_faces
from digan.utils.images import to_uint8
from digan.utils.io import write_bytes, write_text

__all__ = ["MeshData", "mesh_from_depth", "write_obj", "write_ply", "write_glb", "export_mesh", "FORMATS"]

FORMATS = ("obj", "ply", "glb")


@dataclass
class MeshData:
    vertices: np.ndarray  # (N,3) float32, viewer frame
    faces: np.ndarray  # (F,3) int64, CCW from the front
    uv: np.ndarray  # (N,2) float32
    colors: np.ndarray  # (N,3) uint8 (albedo at the vertex)
    texture: np.ndarray  # (S,S,3) uint8 albedo image


def mesh_from_depth(depth: torch.Tensor, albedo: torch.Tensor, fov: float = 10.0, mask: torch.Tensor | None = None,
                    pivot: float = 1.0, scale: float = 1.0) -> MeshData:
    """Mesh of one canonical depth map (1,S,S) or (S,S) with albedo (3,S,S) in [-1,1].

    ``mask`` (S,S) selects the vertices to keep (None: all); a face needs all three vertices.
    """
    d = depth.detach().float().cpu().reshape(1, 1, *depth.shape[-2:])
    s_h, s_w = d.shape[-2:]
    pts = depth_to_points(d, fov)[0].reshape(-1, 3).numpy()
    faces = grid_faces(s_h, s_w).numpy().astype(np.int64)
    if mask is not None:
        keep_v = mask.detach().cpu().reshape(-1).numpy() > 0.5
        faces = faces[keep_v[faces].all(1)]
    if len(faces) == 0:
        raise DiganError("the foreground mask is empty: no mesh to export (is the depth map flat?)")
    used = np.unique(faces)
    remap = -np.ones(len(pts), dtype=np.int64)
    remap[used] = np.arange(len(used))
    faces = remap[faces]
    verts = pts[used]
    verts = np.stack([verts[:, 0], -verts[:, 1], pivot - verts[:, 2]], 1) * scale
    rows, cols = np.divmod(used, s_w)
    uv = np.stack([cols / (s_w - 1), 1.0 - rows / (s_h - 1)], 1).astype(np.float32)
    tex = to_uint8(albedo.detach().float().cpu().clamp(-1, 1))
    colors = tex[rows, cols]
    return MeshData(verts.astype(np.float32), faces, uv, colors, tex)


def write_obj(path: str | Path, mesh: MeshData) -> list[Path]:
    """``NAME.obj`` + ``NAME.mtl`` + ``NAME.png``; returns the three paths."""
    from PIL import Image

    p = Path(path)
    stem = p.stem
    png, mtl = p.with_suffix(".png"), p.with_suffix(".mtl")
    buf = io.BytesIO()
    Image.fromarray(mesh.texture).save(buf, format="PNG")
    write_bytes(png, buf.getvalue())
    write_text(mtl, f"newmtl {stem}\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nillum 1\nmap_Kd {png.name}\n")
    lines = [f"# digan-bench student mesh: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces", f"mtllib {mtl.name}", f"o {stem}"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in mesh.vertices]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in mesh.uv]
    lines.append(f"usemtl {stem}")
    f1 = mesh.faces + 1
    lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in f1]
    write_text(p, "\n".join(lines) + "\n")
    return [p, mtl, png]


def _trimesh(mesh: MeshData, textured: bool):
    import trimesh
    from PIL import Image

    if textured:
        mat = trimesh.visual.material.SimpleMaterial(image=Image.fromarray(mesh.texture))
        visual = trimesh.visual.TextureVisuals(uv=mesh.uv, image=Image.fromarray(mesh.texture), material=mat)
    else:
        rgba = np.concatenate([mesh.colors, np.full((len(mesh.colors), 1), 255, np.uint8)], 1)
        visual = trimesh.visual.ColorVisuals(vertex_colors=rgba)
    return trimesh.Trimesh(vertices=mesh.vertices, faces=mesh.faces, visual=visual, process=False)


def write_ply(path: str | Path, mesh: MeshData) -> list[Path]:
    """Binary PLY with per-vertex RGBA colours."""
    data = _trimesh(mesh, textured=False).export(file_type="ply")
    return [write_bytes(path, data)]


def write_glb(path: str | Path, mesh: MeshData) -> list[Path]:
    """Binary glTF with UVs and the albedo texture."""
    data = _trimesh(mesh, textured=True).export(file_type="glb")
    return [write_bytes(path, data)]


_WRITERS = {"obj": write_obj, "ply": write_ply, "glb": write_glb}


def export_mesh(out_stem: str | Path, depth: torch.Tensor, albedo: torch.Tensor, formats: Sequence[str] = FORMATS,
                fov: float = 10.0, mask: torch.Tensor | None = None, scale: float = 1.0) -> list[Path]:
    """Write ``out_stem.{obj,mtl,png,ply,glb}`` for one face; returns the written paths."""
    bad = [f for f in formats if f not in _WRITERS]
    if bad:
        raise DiganError(f"unknown mesh format '{bad[0]}'; choose from {', '.join(FORMATS)}")
    mesh = mesh_from_depth(depth, albedo, fov, mask, scale=scale)
    written: list[Path] = []
    for f in formats:
        written += _WRITERS[f](Path(out_stem).with_suffix(f".{f}"), mesh)
    return written


def export_student_meshes(student, out_dir: str | Path, n: int = 4, seed: int = 0, psi: float | None = None,
                          formats: Sequence[str] = FORMATS, crop: bool = True, scale: float = 1.0, force: bool = False,
                          finish: Callable[[Path], None] | None = None) -> list[Path]:
    """Export ``n`` faces of a :class:`digan.student.inference.Student` to ``out_dir/face_XXXX.*`` (atomic folder).

    ``finish(tmp)``, when given, runs on the complete staging folder before it is swapped in (the
    caller's ``config.json`` / ``run.json``), so the provenance is part of the atomic write."""
    import math

    from digan.utils.io import atomic_dir

    if not formats:
        raise DiganError(f"no mesh format given; pass --formats with some of {', '.join(FORMATS)}")
    if not (math.isfinite(scale) and scale > 0):
        raise DiganError(f"--scale must be a positive finite number (1 = renderer units), got {scale}")
    if psi is not None and not math.isfinite(psi):
        raise DiganError(f"--psi must be a finite number, e.g. 0.7, got {psi}")
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise DiganError(f"unknown mesh format '{bad[0]}'; choose from {', '.join(FORMATS)}")
    written: list[Path] = []
    with atomic_dir(out_dir, force=force) as tmp:
        for s0 in range(0, n, 8):
            m = min(8, n - s0)
            est = student.estimate(student.style(student.latents(m, seed, s0), psi))
            fg = student.g3d.foreground(est.depth) if crop else None
            for j in range(m):
                paths = export_mesh(tmp / f"face_{s0 + j:04d}", est.depth[j], est.albedo[j], formats,
                                    student.cfg.renderer.fov, fg[j, 0] if fg is not None else None, scale)
                written += [Path(out_dir) / q.name for q in paths]
        if finish is not None:
            finish(tmp)
    return written
