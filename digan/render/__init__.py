"""Differentiable mesh renderer for depth-map meshes (pure PyTorch; optional PyTorch3D backend).

Quick use::

    from digan.render import MeshRenderer, RendererConfig, View, Light
    r = MeshRenderer(RendererConfig(image_size=64))
    out = r.render(depth, albedo, View.from_angles(yaw=30.0, batch=B), Light.make(0.5, 0.5, batch=B))
    out.image, out.depth, out.normal, out.mask, out.grid

Camera, view and light conventions: :mod:`digan.render.camera`, :mod:`digan.render.shading`,
:mod:`digan.render.types`. Rasterizer: :mod:`digan.render.rasterize`.
"""

from digan.render.camera import (
    blend_vertices,
    depth_to_points,
    focal_length,
    grid_faces,
    project_points,
    rotation_matrix,
    transform_points,
)
from digan.render.rasterize import Fragments, interpolate, rasterize
from digan.render.renderer import MeshRenderer, RendererConfig, RenderResult, resolve_backend
from digan.render.shading import apply_shading, lambertian_shading, normals_from_depth, normals_from_points
from digan.render.types import Light, View

__all__ = [
    "MeshRenderer",
    "RendererConfig",
    "RenderResult",
    "Fragments",
    "rasterize",
    "interpolate",
    "resolve_backend",
    "depth_to_points",
    "project_points",
    "focal_length",
    "grid_faces",
    "rotation_matrix",
    "transform_points",
    "blend_vertices",
    "normals_from_points",
    "normals_from_depth",
    "lambertian_shading",
    "apply_shading",
    "View",
    "Light",
]
