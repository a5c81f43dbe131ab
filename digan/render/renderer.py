"""DIGAN's differentiable depth-map mesh renderer (backend-neutral).

Pipeline of :meth:`MeshRenderer.render` (DIGAN-NOTES "Data flow", step 7):

1. canonical depth (B,1,S,S) -> one vertex per pixel (:func:`~digan.render.camera.depth_to_points`),
   two triangles per pixel quad (:func:`~digan.render.camera.grid_faces`);
2. canonical normals from the depth map and Lambertian shading in the canonical frame
   (:mod:`digan.render.shading`); the shaded canonical image is ``albedo * shading``;
3. rigid view ``R (P - p) + p + t`` about the pivot ``(0, 0, pivot_depth)``; with a transformation
   map ``T`` the rendered vertex is ``T * posed + (1 - T) * canonical``;
4. perspective projection and hard z-buffered rasterization (torch or PyTorch3D backend);
5. per-vertex attributes interpolated with the (perspective-correct) barycentrics: the shaded
   colour, the canonical pixel coordinates (the sampling ``grid``) and the view-space normals.

Texture (documented choice, ``texture`` config): ``'vertex'`` (default) interpolates the shaded
canonical image as vertex colours, as DIGAN/LiftedGAN do with PyTorch3D ``TexturesVertex``;
``'grid'`` samples the shaded canonical image bilinearly at the interpolated canonical
coordinates (Unsup3d-style ``grid_sample``). Both give gradients to the albedo, the light and
the depth (through the shading normals and through the barycentrics). In the canonical view
both reproduce the shaded canonical image exactly, because every pixel centre is a vertex.

Outputs outside the covered region: ``image`` = background colour (white, 1.0), ``depth`` =
``background_depth`` (default ``max_depth + (max_depth - min_depth) / 2`` = 1.2, LiftedGAN's
value), ``normal`` = 0, ``grid`` = 2.0 (outside [-1, 1], so ``grid_sample`` with zero padding
returns 0), ``mask`` = 0. The mask is a hard coverage mask without gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
import torch.nn.functional as F

from digan.errors import DiganError
from digan.render.camera import (
    blend_vertices,
    depth_to_points,
    grid_faces,
    project_points,
    transform_points,
)
from digan.render.rasterize import Fragments, interpolate, rasterize
from digan.render.shading import apply_shading, lambertian_shading, normals_from_points
from digan.render.types import Light, View

__all__ = ["RendererConfig", "RenderResult", "MeshRenderer", "resolve_backend"]


@dataclass
class RendererConfig:
    """Renderer settings; defaults are DIGAN's / LiftedGAN's."""

    image_size: int = 64
    fov: float = 10.0  # degrees across the image
    min_depth: float = 0.9
    max_depth: float = 1.1
    pivot_depth: Optional[float] = None  # rotation centre depth; None -> (min + max) / 2 = 1.0
    background_depth: Optional[float] = None  # rendered depth where empty; None -> max + (max - min) / 2
    background: float = 1.0  # background colour in [-1, 1] (white)
    backend: Literal["auto", "torch", "pytorch3d"] = "auto"  # auto: the faster one on the device, as measured (resolve_backend)
    perspective_correct: bool = True
    texture: Literal["vertex", "grid"] = "vertex"
    # normals from depth: "unit" (DIGAN) or "liftedgan" (n / (|n| + 1e-7)); see digan.render.shading
    normal_norm: Literal["unit", "liftedgan"] = "unit"
    max_candidates: int = 1 << 22  # torch backend: bounding-box pixels per chunk of faces (memory bound)

    @property
    def pivot(self) -> float:
        return self.pivot_depth if self.pivot_depth is not None else 0.5 * (self.min_depth + self.max_depth)

    @property
    def bg_depth(self) -> float:
        if self.background_depth is not None:
            return self.background_depth
        return self.max_depth + 0.5 * (self.max_depth - self.min_depth)


@dataclass
class RenderResult:
    """Everything a render produces. Images in [-1, 1]; maps are (B,C,S,S) unless noted.

    * ``image`` (B,3): rendered view; ``depth`` (B,1): camera depth; ``normal`` (B,3): unit
      view-space normals (convention of :mod:`digan.render.shading`); ``mask`` (B,1): coverage.
    * ``grid`` (B,S,S,2): canonical ``(x, y)`` in [-1, 1] of each output pixel, for
      ``F.grid_sample(canonical_map, grid, align_corners=True)``.
    * ``shading`` (B,1) and ``canonical_normal`` (B,3): in the canonical frame;
      ``canonical_image`` (B,3): the shaded canonical image that is rendered.
    * ``extra`` (B,C): the interpolated ``extra`` maps passed to ``render`` (0 where empty).
    * ``fragments``: the rasterizer output; ``vertices`` (B,S*S,3): rendered camera-space vertices.
    """

    image: torch.Tensor
    depth: torch.Tensor
    normal: torch.Tensor
    mask: torch.Tensor
    grid: torch.Tensor
    shading: torch.Tensor
    canonical_normal: torch.Tensor
    canonical_image: torch.Tensor
    fragments: Fragments
    vertices: torch.Tensor
    extra: Optional[torch.Tensor] = None


def resolve_backend(backend: str, device: torch.device, image_size: int = 64) -> str:
    """The backend to rasterize with; 'pytorch3d' must import.

    'auto' -> 'torch' when PyTorch3D does not import; otherwise whichever backend
    ``digan-bench bench renderer --backend both`` measured faster on this device (and library
    versions) at the nearest image size, or, with no such record yet, a quick measurement made
    once and cached (:func:`digan.render.bench.measured_faster_backend`). Both backends draw the
    same pixels with the same gradients (:mod:`digan.render.pytorch3d_backend`), so the choice is
    one of speed only: on CPU the torch backend is 25-180x faster.
    """
    from digan.render.pytorch3d_backend import pytorch3d_available

    if backend == "torch":
        return "torch"
    if backend == "pytorch3d":
        if not pytorch3d_available():
            raise DiganError("renderer backend 'pytorch3d' requested but pytorch3d does not import; install it or use backend=torch")
        return "pytorch3d"
    if backend == "auto":
        if not pytorch3d_available():
            return "torch"
        from digan.render.bench import measured_faster_backend

        return measured_faster_backend(torch.device(device), image_size)
    raise DiganError(f"unknown renderer backend {backend!r}; choose auto, torch or pytorch3d")


class MeshRenderer:
    """Backend-neutral differentiable renderer of depth-map meshes (see the module docstring)."""

    def __init__(self, config: RendererConfig | None = None, **overrides):
        cfg = config or RendererConfig()
        if overrides:
            cfg = RendererConfig(**{**cfg.__dict__, **overrides})
        if cfg.image_size < 4:
            raise DiganError(f"renderer image_size {cfg.image_size} is too small; use at least 4 (e.g. 64, 128, 256)")
        if not (0 < cfg.fov < 180):
            raise DiganError(f"renderer fov {cfg.fov} must be in (0, 180) degrees")
        self.config = cfg

    # ----------------------------------------------------------------- pieces
    @property
    def image_size(self) -> int:
        return self.config.image_size

    def faces(self, device: torch.device | str = "cpu") -> torch.Tensor:
        s = self.config.image_size
        return grid_faces(s, s, device)

    def _check(self, depth: torch.Tensor, name: str = "depth") -> None:
        s = self.config.image_size
        if depth.ndim != 4 or depth.shape[1] != 1 or depth.shape[-2:] != (s, s):
            raise DiganError(f"{name} must be (B,1,{s},{s}) for this renderer, got {tuple(depth.shape)}; resize it or set image_size")

    def points(self, depth: torch.Tensor) -> torch.Tensor:
        """Canonical camera-space points (B,S,S,3) of a depth map."""
        return depth_to_points(depth, self.config.fov)

    def posed_points(self, depth: torch.Tensor, view: View, transform_map: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(canonical, rendered) point grids (B,S,S,3) for a view (and optional T map)."""
        canon = self.points(depth)
        posed = transform_points(canon, view.to(depth.device), self.config.pivot)
        return canon, blend_vertices(posed, canon, transform_map)

    def rasterize(self, vertices: torch.Tensor, vertex_mask: torch.Tensor | None = None) -> Fragments:
        """Rasterize camera-space grid vertices (B,S*S,3) or (B,S,S,3) with the configured backend.

        ``vertex_mask`` (B,1,S,S): only faces whose three vertices are in the mask are drawn.
        """
        cfg = self.config
        s = cfg.image_size
        b = vertices.shape[0]
        verts = vertices.reshape(b, -1, 3)
        screen = project_points(verts, s, cfg.fov)
        faces = self.faces(verts.device)
        face_mask = None
        if vertex_mask is not None:
            vm = vertex_mask.reshape(b, -1) > 0.5
            face_mask = vm[:, faces].all(-1)
        backend = resolve_backend(cfg.backend, verts.device, s)
        if backend == "pytorch3d":
            from digan.render.pytorch3d_backend import rasterize_pytorch3d

            return rasterize_pytorch3d(screen, faces, s, cfg.perspective_correct, face_mask)
        return rasterize(screen, faces, s, cfg.perspective_correct, face_mask, max_candidates=cfg.max_candidates)

    def canonical_grid(self, batch: int, device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Per-vertex canonical coordinates (B,S*S,2) in [-1, 1] (x = column, y = row)."""
        s = self.config.image_size
        lin = torch.linspace(-1.0, 1.0, s, device=device, dtype=dtype)
        gy, gx = torch.meshgrid(lin, lin, indexing="ij")
        return torch.stack([gx, gy], -1).reshape(1, -1, 2).expand(batch, -1, -1)

    # ----------------------------------------------------------------- render
    def render(
        self,
        depth: torch.Tensor,
        albedo: torch.Tensor,
        view: View,
        light: Light,
        transform_map: torch.Tensor | None = None,
        vertex_mask: torch.Tensor | None = None,
        extra: torch.Tensor | None = None,
    ) -> RenderResult:
        """Render canonical ``depth`` (B,1,S,S) and ``albedo`` (B,3,S,S, [-1,1]) under ``view``/``light``.

        ``transform_map`` (B,1,S,S): DIGAN's T map. ``vertex_mask`` (B,1,S,S): draw only faces
        inside it (e.g. a head without its backdrop). ``extra`` (B,C,S,S): further canonical
        maps interpolated like the colour; returned as ``result.extra``.
        """
        cfg = self.config
        self._check(depth)
        b, _, s, _ = depth.shape
        if albedo.shape != (b, 3, s, s):
            raise DiganError(f"albedo must be (B,3,{s},{s}) matching depth, got {tuple(albedo.shape)}")
        dev, dt = depth.device, depth.dtype
        light = light.to(dev)
        canon, verts = self.posed_points(depth, view, transform_map)
        canon_normal = normals_from_points(canon, cfg.normal_norm)
        shading = lambertian_shading(canon_normal, light)
        canon_im = apply_shading(albedo, shading)
        view_normal = normals_from_points(verts, cfg.normal_norm)  # (B,3,S,S)

        frags = self.rasterize(verts, vertex_mask)
        grid_attr = self.canonical_grid(b, dev, dt)
        attrs = [
            grid_attr,
            view_normal.permute(0, 2, 3, 1).reshape(b, -1, 3),
        ]
        if cfg.texture == "vertex":
            attrs.append(canon_im.permute(0, 2, 3, 1).reshape(b, -1, 3))
        if extra is not None:
            attrs.append(extra.permute(0, 2, 3, 1).reshape(b, s * s, -1))
        pix = interpolate(frags, torch.cat(attrs, dim=-1))
        mask = frags.mask
        grid = torch.where(mask.permute(0, 2, 3, 1) > 0, pix[:, 0:2].permute(0, 2, 3, 1), torch.full_like(pix[:, 0:2].permute(0, 2, 3, 1), 2.0))
        normal = pix[:, 2:5]
        normal = normal / normal.norm(dim=1, keepdim=True).clamp_min(1e-12) * mask
        if cfg.texture == "vertex":
            colour = pix[:, 5:8]
            c0 = 8
        else:
            colour = F.grid_sample(canon_im, grid, mode="bilinear", padding_mode="border", align_corners=True)
            c0 = 5
        image = colour * mask + cfg.background * (1 - mask)
        zb = frags.zbuf.unsqueeze(1)
        rdepth = torch.where(mask > 0, zb, torch.full_like(zb, cfg.bg_depth))
        res = RenderResult(
            image=image,
            depth=rdepth,
            normal=normal,
            mask=mask,
            grid=grid,
            shading=shading,
            canonical_normal=canon_normal,
            canonical_image=canon_im,
            fragments=frags,
            vertices=verts.reshape(b, -1, 3),
        )
        if extra is not None:
            res.extra = pix[:, c0:] * mask
        return res

    def render_depth(self, depth: torch.Tensor, view: View, transform_map: torch.Tensor | None = None, vertex_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Only the rendered depth (B,1,S,S) and coverage mask (B,1,S,S) of a view."""
        self._check(depth)
        _, verts = self.posed_points(depth, view, transform_map)
        frags = self.rasterize(verts, vertex_mask)
        mask = frags.mask
        zb = frags.zbuf.unsqueeze(1)
        return torch.where(mask > 0, zb, torch.full_like(zb, self.config.bg_depth)), mask

    # ------------------------------------------------------------ inverse warp
    def view_grid(self, depth: torch.Tensor, view: View, transform_map: torch.Tensor | None = None, vertex_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Only the sampling grid (B,S,S,2) of a view (2.0 where empty); see :class:`RenderResult`."""
        self._check(depth)
        b = depth.shape[0]
        _, verts = self.posed_points(depth, view, transform_map)
        frags = self.rasterize(verts, vertex_mask)
        pix = interpolate(frags, self.canonical_grid(b, depth.device, depth.dtype), background=2.0)
        return pix.permute(0, 2, 3, 1)

    def warp_to_canonical(
        self,
        view_map: torch.Tensor,
        depth: torch.Tensor,
        view: View,
        transform_map: torch.Tensor | None = None,
        view_grid: torch.Tensor | None = None,
        vertex_mask: torch.Tensor | None = None,
        max_offset: float = 2.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pull a view-space map (B,C,S,S) back to the canonical frame of ``depth``.

        Each canonical vertex is posed and projected into the view; ``view_map`` is sampled
        there bilinearly (``grid_sample``, ``align_corners=True``). Returns ``(warped, visible)``.

        Visibility without depth tolerances: a canonical pixel is ``visible`` (B,1,S,S) when
        its projection lies inside the image and each of the four view pixels it is
        interpolated from shows a surface point whose canonical position (the view's sampling
        ``grid``) lies within ``max_offset`` canonical pixels of it. An occluded point fails
        because its view pixels show the occluder, which comes from elsewhere in the canonical
        image; a point next to an occlusion edge fails because one of its four neighbours does.
        ``view_grid`` is the view's ``RenderResult.grid`` (rendered here when not given).
        Differentiable w.r.t. ``view_map`` and ``depth``; useful for +a/-a consistency and
        Unsup3d-style losses in the canonical frame.
        """
        cfg = self.config
        self._check(depth)
        b, _, s, _ = depth.shape
        _, verts = self.posed_points(depth, view, transform_map)
        screen = project_points(verts, s, cfg.fov)  # (B,S,S,3)
        g = screen[..., :2] / (s - 1) * 2 - 1
        warped = F.grid_sample(view_map, g.to(view_map.dtype), mode="bilinear", padding_mode="border", align_corners=True)
        with torch.no_grad():
            if view_grid is None:
                view_grid = self.view_grid(depth, view, transform_map, vertex_mask)
            own = self.canonical_grid(b, depth.device, torch.float32).reshape(b, s, s, 2)
            uv = screen[..., :2].detach().float()
            inside = ((uv >= 0) & (uv <= s - 1)).all(-1)
            vg = view_grid.float().permute(0, 3, 1, 2)  # (B,2,S,S)
            worst = torch.zeros(b, s, s, device=depth.device)
            for ox in (0, 1):
                for oy in (0, 1):
                    cx = (torch.floor(uv[..., 0]) + ox).clamp(0, s - 1)
                    cy = (torch.floor(uv[..., 1]) + oy).clamp(0, s - 1)
                    gn = torch.stack([cx, cy], -1) / (s - 1) * 2 - 1
                    src = F.grid_sample(vg, gn, mode="nearest", padding_mode="border", align_corners=True)
                    off = (src.permute(0, 2, 3, 1) - own).norm(dim=-1) * (s - 1) / 2  # canonical px
                    worst = torch.maximum(worst, off)
            visible = inside & (worst <= max_offset)
            visible = visible.unsqueeze(1)
            if vertex_mask is not None:
                visible &= vertex_mask > 0.5
        return warped, visible.to(view_map.dtype)
