"""Pure-PyTorch z-buffered hard rasterizer with PyTorch3D-style gradients.

No compilation, runs on CPU and any CUDA device. Two passes, as PyTorch3D does it:

1. **Visibility (no gradient).** For every triangle, the rows of its screen bounding box are
   enumerated, the exact x-span of the triangle on each row is solved, and the integer pixel
   centres of the spans become candidate (face, pixel) pairs, fully vectorised
   (``repeat_interleave`` over row counts and span lengths, in chunks of faces whose bounding
   boxes hold at most about ``max_candidates`` pixels so that huge triangles cannot exhaust
   memory). Barycentric
   coordinates and depth are affine in the pixel position, so each face gets four affine forms
   (three barycentrics and depth or inverse depth) computed once, in coordinates local to its
   bounding box (exact in float32 even at 1024 px). Candidates inside the triangle
   (all barycentrics >= -``bary_eps``) are z-buffered with one ``scatter_reduce('amin')`` on an
   int64 key ``(float32 bits of depth) << 32 | face index``: the nearest face wins and exact ties
   go to the smallest face index, deterministically on every device.
2. **Differentiable recomputation.** For each covered pixel the winning face's barycentric
   coordinates and depth are recomputed from the (differentiable) screen-space vertices, so
   gradients reach vertex positions and, through :func:`interpolate`, per-vertex attributes,
   exactly like PyTorch3D's mesh rasterizer with ``blur_radius=0, faces_per_pixel=1`` (no
   gradient from silhouette changes, which a hard rasterizer cannot give).

Screen space: vertices are ``(u, v, z)`` with ``u`` the column and ``v`` the row coordinate in
pixels, pixel centres at integers (see :mod:`digan.render.camera`); ``z`` is the camera depth.
No back-face culling (both sides render, as in Unsup3d's ``fill_back``). Faces with a vertex at
``z <= near`` or with zero screen area are skipped.

Tie rule (shared by both backends, :mod:`digan.render.pytorch3d_backend` included): triangles
are **closed**. A pixel centre on an edge or a vertex is inside every triangle that shares it, up
to a tolerance (``bary_eps``, :func:`tie_tolerance`) that absorbs float32 round-off of the
projected vertices, and the z-buffer picks one of them. This matters at the canonical view
(yaw = pitch = roll = 0, no translation), where every pixel centre lies exactly on a mesh vertex:
with a strict test (``bary > 0``, PyTorch3D's) almost nothing would be drawn. Which of the tied
faces wins does not change the colour, depth or their gradients with respect to depth, albedo
and light, because the winning face's barycentrics there are ``(1, 0, 0)`` up to round-off
(gradients with respect to the view angles at exactly the canonical view are one-sided and may
differ between tied faces, as in any hard rasterizer).

Perspective-correct barycentrics (default): ``b_i' = (b_i / z_i) / sum_j (b_j / z_j)``; the depth
is then ``1 / sum_j (b_j / z_j)``, the exact depth of the triangle plane along the pixel ray.
Without it, depth is ``sum_i b_i z_i`` (screen-space interpolation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Fragments", "rasterize", "interpolate", "tie_tolerance"]

_KEY_EMPTY = torch.iinfo(torch.int64).max


def tie_tolerance(image_size: int) -> float:
    """Barycentric tolerance of the inside test (the closed-triangle tie rule) for an image size.

    ``1e-5`` up to 256 px. Above, float32 round-off of the projected vertices (about
    ``6e-8 * S`` pixels) exceeds it and canonical renders got holes (679 empty pixels at 512 px,
    284 at 1024 px), so it grows as ``2e-7 * S`` (1.0e-4 at 512, 2.0e-4 at 1024 px).
    """
    s = int(image_size)
    return 1e-5 if s <= 256 else 2e-7 * s


@dataclass
class Fragments:
    """Result of rasterizing a batch of meshes that share one face list.

    * ``pix_to_face`` (B,H,W) int64: index into the mesh's faces (not packed over the batch),
      -1 where no face covers the pixel.
    * ``bary`` (B,H,W,3): barycentric coordinates of the pixel centre in the winning face
      (perspective-corrected when requested), zeros where empty; differentiable.
    * ``zbuf`` (B,H,W): camera depth at the pixel centre, -1 where empty; differentiable.
    * ``index`` (M,): flat ``b * H * W + row * W + col`` of the covered pixels (ascending);
      ``face_verts`` (M,3): their face's vertex indices; ``bary_valid`` (M,3): their barycentrics.
    """

    pix_to_face: torch.Tensor
    bary: torch.Tensor
    zbuf: torch.Tensor
    index: torch.Tensor
    face_verts: torch.Tensor
    bary_valid: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """(B,1,H,W) float: 1 where a face covers the pixel."""
        return (self.pix_to_face >= 0).unsqueeze(1).to(self.bary.dtype)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.pix_to_face.shape)  # type: ignore[return-value]


def _face_bboxes(tri: torch.Tensor, h: int, w: int, near: float):
    """Per-face integer bbox (x0, y0, nx, ny) clipped to the image, and a validity mask."""
    u, v, z = tri[..., 0], tri[..., 1], tri[..., 2]
    e1u, e1v = u[..., 1] - u[..., 0], v[..., 1] - v[..., 0]
    e2u, e2v = u[..., 2] - u[..., 0], v[..., 2] - v[..., 0]
    area = e1u * e2v - e1v * e2u
    finite = torch.isfinite(tri).all(-1).all(-1)
    valid = finite & (z.min(-1).values > near) & (area.abs() > 1e-10)
    # clamp before the integer conversion so that far-away vertices cannot overflow; the
    # tolerance keeps pixel centres that a vertex hits up to round-off (u = 3 - 1e-6 or 3 + 1e-6)
    tol = 1e-3
    umin = torch.ceil((u.min(-1).values - tol).clamp(-1, w)).long()
    umax = torch.floor((u.max(-1).values + tol).clamp(-1, w)).long()
    vmin = torch.ceil((v.min(-1).values - tol).clamp(-1, h)).long()
    vmax = torch.floor((v.max(-1).values + tol).clamp(-1, h)).long()
    x0, x1 = umin.clamp(min=0), umax.clamp(max=w - 1)
    y0, y1 = vmin.clamp(min=0), vmax.clamp(max=h - 1)
    nx = (x1 - x0 + 1).clamp(min=0)
    ny = (y1 - y0 + 1).clamp(min=0)
    count = torch.where(valid, nx * ny, torch.zeros_like(nx))
    return x0, y0, nx, ny, count


def _affine_forms(tri: torch.Tensor, ox: torch.Tensor, oy: torch.Tensor, perspective_correct: bool) -> torch.Tensor:
    """(K,4,3) affine forms ``[A, B, C]`` so that ``A*x + B*y + C`` at local pixel (x, y) gives
    b0, b1, b2 and inverse depth (perspective) or depth (screen-space)."""
    u = tri[..., 0] - ox[:, None].to(tri.dtype)
    v = tri[..., 1] - oy[:, None].to(tri.dtype)
    z = tri[..., 2]
    area = (u[:, 1] - u[:, 0]) * (v[:, 2] - v[:, 0]) - (v[:, 1] - v[:, 0]) * (u[:, 2] - u[:, 0])
    forms = []
    for i in range(3):
        a, b = (i + 1) % 3, (i + 2) % 3
        du, dv = u[:, b] - u[:, a], v[:, b] - v[:, a]
        forms.append(torch.stack([-dv, du, dv * u[:, a] - du * v[:, a]], dim=-1) / area[:, None])
    bary = torch.stack(forms, dim=1)  # (K,3,3): [face vertex i, (A, B, C)]
    zq = (1.0 / z) if perspective_correct else z
    zform = (bary * zq[:, :, None]).sum(1, keepdim=True)
    return torch.cat([bary, zform], dim=1)


def _scan_chunk(buf, forms, fx0, fy0, fnx, fny, batch_of, face_of, h, w, perspective_correct, near, bary_eps) -> None:
    """z-buffer the pixels of a chunk of faces into ``buf`` (int64 keys, in place).

    Two-level enumeration: (face, row) pairs over each bounding box's rows, where the exact
    x-span of the triangle on that row is solved from the three barycentric forms; then only the
    pixels of each span become candidates. Thin, stretched triangles (transformation-map seams,
    grazing views) thus cost their covered pixels, not their bounding boxes.
    """
    device = buf.device
    k = forms.shape[0]
    n_rows = int(fny.sum())
    if n_rows == 0:
        return
    local = torch.repeat_interleave(torch.arange(k, device=device), fny, output_size=n_rows)
    dy = torch.arange(n_rows, device=device) - (torch.cumsum(fny, 0) - fny)[local]
    f = forms[local]  # (R,4,3)
    slope = f[..., 0]  # (R,4): d/dx of b0, b1, b2, z-form
    row = f[..., 1] * dy.to(f.dtype)[:, None] + f[..., 2]  # (R,4): value at x = 0 on this row
    # span of x (local) with slope_i * x + row_i >= -bary_eps for i = 0, 1, 2
    a, thr = slope[:, :3], -bary_eps - row[:, :3]
    pos, neg = a > 0, a < 0
    big = float(w + 2)
    bound = (thr / torch.where(pos | neg, a, torch.ones_like(a))).clamp(-big, big)
    lo = torch.where(pos, bound, torch.full_like(bound, -big)).amax(1)
    hi = torch.where(neg, bound, torch.full_like(bound, big)).amin(1)
    never = (~(pos | neg) & (thr > 0)).any(1)
    nxr = fnx[local]
    xlo = torch.ceil(lo - 1e-3).long().clamp(min=0)
    xhi = torch.minimum(torch.floor(hi + 1e-3).long(), nxr - 1)
    span = torch.where(never, torch.zeros_like(xlo), (xhi - xlo + 1).clamp(min=0))
    n = int(span.sum())
    if n == 0:
        return
    rloc = torch.repeat_interleave(torch.arange(n_rows, device=device), span, output_size=n)
    dx = xlo[rloc] + torch.arange(n, device=device) - (torch.cumsum(span, 0) - span)[rloc]
    vals = slope[rloc] * dx.to(slope.dtype)[:, None] + row[rloc]  # (n,4)
    inside = (vals[:, :3] >= -bary_eps).all(1)
    zq = vals[:, 3]
    if perspective_correct:
        inside &= zq > 0
        z = 1.0 / zq.clamp(min=1e-12)
    else:
        z = zq
    inside &= z > near
    idx = torch.nonzero(inside).squeeze(1)
    if idx.numel() == 0:
        return
    r_i = rloc[idx]
    fi = local[r_i]
    pix = (batch_of[fi] * h + fy0[fi] + dy[r_i]) * w + fx0[fi] + dx[idx]
    zbits = z[idx].float().contiguous().view(torch.int32).to(torch.int64)
    key = (zbits << 32) | face_of[fi]
    buf.scatter_reduce_(0, pix, key, reduce="amin", include_self=True)


@torch.no_grad()
def _visibility(
    screen: torch.Tensor,
    faces: torch.Tensor,
    h: int,
    w: int,
    perspective_correct: bool,
    face_mask: torch.Tensor | None,
    near: float,
    bary_eps: float,
    max_candidates: int,
) -> torch.Tensor:
    """(B,H,W) int64 winning face index per pixel (-1 empty); see the module docstring."""
    b, nf = screen.shape[0], faces.shape[0]
    device = screen.device
    tri = screen.detach()[:, faces].reshape(b * nf, 3, 3)  # (B*F, vertex, uvz)
    x0, y0, nx, ny, count = _face_bboxes(tri, h, w, near)
    if face_mask is not None:
        count = torch.where(face_mask.reshape(-1).to(torch.bool), count, torch.zeros_like(count))
    sel = torch.nonzero(count > 0).squeeze(1)
    buf = torch.full((b * h * w,), _KEY_EMPTY, dtype=torch.int64, device=device)
    if sel.numel() > 0:
        cnt = count[sel]
        forms = _affine_forms(tri[sel].float(), x0[sel], y0[sel], perspective_correct)  # (K,4,3)
        fx0, fy0, fnx, fny = x0[sel], y0[sel], nx[sel], ny[sel]
        batch_of = torch.div(sel, nf, rounding_mode="floor")
        face_of = sel - batch_of * nf
        cum = torch.cumsum(cnt, 0)
        total = int(cum[-1])
        # chunk boundaries on whole faces so that no chunk has more than about max_candidates
        # bounding-box pixels (a single larger face forms its own chunk)
        bounds = [0]
        if total > max_candidates:
            targets = torch.arange(max_candidates, total, max_candidates, device=device)
            for c in torch.searchsorted(cum, targets, right=True).tolist():
                if bounds[-1] < c < sel.numel():
                    bounds.append(c)
        bounds.append(sel.numel())
        for a, e in zip(bounds[:-1], bounds[1:]):
            _scan_chunk(buf, forms[a:e], fx0[a:e], fy0[a:e], fnx[a:e], fny[a:e], batch_of[a:e], face_of[a:e],
                        h, w, perspective_correct, near, bary_eps)
    found = buf != _KEY_EMPTY
    p2f = torch.where(found, buf & 0xFFFFFFFF, torch.full_like(buf, -1))
    return p2f.view(b, h, w)


def rasterize(
    screen: torch.Tensor,
    faces: torch.Tensor,
    image_size: int | tuple[int, int],
    perspective_correct: bool = True,
    face_mask: torch.Tensor | None = None,
    near: float = 1e-3,
    bary_eps: float | None = None,
    max_candidates: int = 1 << 22,
) -> Fragments:
    """Rasterize screen-space vertices (B,N,3) ``(u, v, z)`` with shared faces (F,3).

    ``face_mask`` (B,F) bool drops faces per mesh. ``bary_eps``: inside-test tolerance, default
    :func:`tie_tolerance` of the image size. Returns :class:`Fragments` whose ``bary`` and
    ``zbuf`` are differentiable w.r.t. ``screen``. See the module docstring.
    """
    if screen.ndim != 3 or screen.shape[-1] != 3:
        raise ValueError(f"screen vertices must be (B,N,3), got {tuple(screen.shape)}")
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    if bary_eps is None:
        bary_eps = tie_tolerance(max(h, w))
    faces = faces.to(screen.device).long()
    p2f = _visibility(screen, faces, h, w, perspective_correct, face_mask, near, bary_eps, max_candidates)
    return fragments_from_pix_to_face(screen, faces, p2f, perspective_correct)


def fragments_from_pix_to_face(screen: torch.Tensor, faces: torch.Tensor, p2f: torch.Tensor, perspective_correct: bool = True) -> Fragments:
    """Differentiable barycentrics and depth of given per-pixel faces (the second pass).

    Shared with the PyTorch3D backend so both return identical structures.
    """
    b, h, w = p2f.shape
    flat = p2f.reshape(-1)
    index = torch.nonzero(flat >= 0).squeeze(1)
    bidx = torch.div(index, h * w, rounding_mode="floor")
    rem = index - bidx * h * w
    py = torch.div(rem, w, rounding_mode="floor")
    px = rem - py * w
    fverts = faces[flat[index]]  # (M,3)
    tri = screen[bidx[:, None], fverts]  # (M,3,3), differentiable
    du = tri[..., 0] - px[:, None].to(tri.dtype)
    dv = tri[..., 1] - py[:, None].to(tri.dtype)
    # edge functions relative to the pixel centre: w_i = cross(d_{i+1}, d_{i+2})
    w0 = du[:, 1] * dv[:, 2] - dv[:, 1] * du[:, 2]
    w1 = du[:, 2] * dv[:, 0] - dv[:, 2] * du[:, 0]
    w2 = du[:, 0] * dv[:, 1] - dv[:, 0] * du[:, 1]
    wsum = w0 + w1 + w2
    wv = torch.stack([w0, w1, w2], dim=1)
    # A sliver (nearly collinear vertices) can be found to cover a pixel centre by the first pass
    # while these edge functions cancel to 0 / 0 in float32 (seen in training: a flipped depth
    # drew a 1e-4 px^2 triangle whose vertex sat on a pixel centre, and the loss became NaN). Such
    # a face has no area to interpolate over: take its vertex nearest to the pixel centre. The
    # safe denominator keeps the unused branch finite, so no NaN reaches the backward pass.
    ok = wsum.abs() > 1e-4 * wv.abs().sum(1)
    bary = wv / torch.where(ok, wsum, torch.ones_like(wsum))[:, None]
    nearest = F.one_hot((du * du + dv * dv).argmin(1), 3).to(bary.dtype)
    bary = torch.where(ok[:, None], bary, nearest)
    z = tri[..., 2]
    if perspective_correct:
        q = bary / z
        qs = q.sum(1, keepdim=True)
        bary = q / qs
        depth = 1.0 / qs[:, 0]
    else:
        depth = (bary * z).sum(1)
    bary_dense = screen.new_zeros(b * h * w, 3).index_put((index,), bary).view(b, h, w, 3)
    zbuf = screen.new_full((b * h * w,), -1.0).index_put((index,), depth).view(b, h, w)
    return Fragments(p2f, bary_dense, zbuf, index, fverts, bary)


def interpolate(fragments: Fragments, attributes: torch.Tensor, background: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Interpolate per-vertex attributes (B,N,C) to pixels (B,C,H,W) with the fragments' barycentrics.

    Empty pixels get ``background`` (a scalar or a (C,) tensor). Differentiable w.r.t. the
    attributes and (through the barycentrics) the vertex positions.
    """
    b, h, w = fragments.pix_to_face.shape
    c = attributes.shape[-1]
    bidx = torch.div(fragments.index, h * w, rounding_mode="floor")
    vals = attributes[bidx[:, None], fragments.face_verts]  # (M,3,C)
    pix = (fragments.bary_valid.to(vals.dtype)[..., None] * vals).sum(1)
    bg = torch.as_tensor(background, dtype=attributes.dtype, device=attributes.device)
    out = bg.expand(c).repeat(b * h * w, 1) if bg.ndim else attributes.new_full((b * h * w, c), float(bg))
    out = out.index_put((fragments.index,), pix)
    return out.view(b, h, w, c).permute(0, 3, 1, 2)
