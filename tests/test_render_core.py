"""Renderer against independent references: analytic planes, brute-force rasterization,
finite differences, round trips and the sign conventions of digan.render.types."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from digan.errors import DiganError
from digan.render import (
    Light,
    MeshRenderer,
    RendererConfig,
    View,
    depth_to_points,
    focal_length,
    interpolate,
    normals_from_depth,
    project_points,
    rasterize,
    rotation_matrix,
    transform_points,
)


def bump_depth(s: int, b: int = 1, height: float = 0.12, sigma: float = 0.35, dtype=torch.float32) -> torch.Tensor:
    """A smooth 'nose' bump in front of a plane at 1.06 (depths within [0.94, 1.06])."""
    lin = torch.linspace(-1, 1, s, dtype=dtype)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    d = 1.06 - height * torch.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    return d.expand(b, 1, s, s).clone()


def smooth_albedo(s: int, b: int = 1, dtype=torch.float32) -> torch.Tensor:
    lin = torch.linspace(-1, 1, s, dtype=dtype)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    a = torch.stack([0.6 * torch.sin(2.0 * xx + 0.5), 0.6 * torch.cos(1.7 * yy), 0.5 * torch.sin(1.3 * (xx + yy))])
    return a.expand(b, 3, s, s).clone()


# ------------------------------------------------------------------ camera / conventions
def test_unproject_project_round_trip_and_intrinsics():
    s, fov = 33, 10.0
    f = focal_length(s, fov)
    assert f == pytest.approx(16.0 / math.tan(math.radians(5.0)))
    depth = 0.9 + 0.2 * torch.rand(2, 1, s, s)
    pts = depth_to_points(depth, fov)
    # the centre pixel lies on the optical axis; a corner pixel sits at the field-of-view edge
    assert torch.allclose(pts[:, 16, 16, :2], torch.zeros(2, 2), atol=1e-7)
    assert pts[0, 0, 0, 0] / pts[0, 0, 0, 2] == pytest.approx(-math.tan(math.radians(5.0)), rel=1e-5)
    scr = project_points(pts, s, fov)
    v, u = torch.meshgrid(torch.arange(s).float(), torch.arange(s).float(), indexing="ij")
    assert torch.allclose(scr[..., 0], u.expand(2, -1, -1), atol=1e-4)
    assert torch.allclose(scr[..., 1], v.expand(2, -1, -1), atol=1e-4)


def test_rotation_matrix_is_rz_ry_rx_with_documented_signs():
    rot = torch.tensor([[20.0, 30.0, 40.0]])
    r = rotation_matrix(rot)[0].double()
    a, b, g = (math.radians(x) for x in (20.0, 30.0, 40.0))
    rx = torch.tensor([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]], dtype=torch.float64)
    # right-handed rotation by -yaw about y
    ry = torch.tensor([[math.cos(-b), 0, math.sin(-b)], [0, 1, 0], [-math.sin(-b), 0, math.cos(-b)]], dtype=torch.float64)
    rz = torch.tensor([[math.cos(g), -math.sin(g), 0], [math.sin(g), math.cos(g), 0], [0, 0, 1]], dtype=torch.float64)
    assert torch.allclose(r, rz @ ry @ rx, atol=1e-6)
    assert torch.allclose(r @ r.T, torch.eye(3, dtype=torch.float64), atol=1e-6)
    assert torch.det(r).item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("axis, image_axis", [("yaw", 0), ("pitch", 1)])
def test_positive_angle_moves_nose_toward_positive_image_axis(axis, image_axis):
    s = 64
    r = MeshRenderer(RendererConfig(image_size=s))
    depth = bump_depth(s)
    kw = {"yaw": 0.0, axis: 30.0}
    out = r.render(depth, torch.zeros(1, 3, s, s), View.from_angles(**kw), Light.uniform(1))
    # the nose tip is the nearest rendered point
    d = out.depth[0, 0]
    i, j = divmod(int(torch.argmin(d)), s)
    pos = (j, i)[image_axis]
    assert pos > (s - 1) / 2 + 3, f"{axis}=+30 put the nose at {(j, i)}"
    # and the single nose point by the closed form: sin(30) * 0.18 / f-scale moves it right/down
    tip = torch.tensor([[[0.0, 0.0, 0.94]]])
    moved = transform_points(tip, View.from_angles(**kw), pivot_depth=1.0)
    assert moved[0, 0, image_axis].item() == pytest.approx(0.06 * math.sin(math.radians(30)), abs=1e-6)


# ------------------------------------------------------------------ analytic plane
@pytest.mark.parametrize("rot", [(0.0, 0.0, 0.0), (0.0, 25.0, 0.0), (-15.0, 20.0, 10.0)])
def test_plane_renders_analytic_depth_shading_and_normals(rot):
    s, d0 = 48, 1.02
    cfg = RendererConfig(image_size=s)
    r = MeshRenderer(cfg)
    depth = torch.full((1, 1, s, s), d0)
    albedo = torch.full((1, 3, s, s), 0.2)
    view = View(torch.tensor([rot]), torch.tensor([[0.01, -0.005, 0.02]]))
    light = Light.make(0.3, 0.6, dx=0.4, dy=-0.7)
    out = r.render(depth, albedo, view, light)

    # closed form: the plane z = d0 after R (P - p) + p + t, intersected with each pixel ray
    R = rotation_matrix(view.rotation)[0].double()
    n = R @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    q = R @ torch.tensor([0.0, 0.0, d0 - 1.0], dtype=torch.float64) + torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64) + view.translation[0].double()
    f, c = focal_length(s, 10.0), (s - 1) / 2
    v, u = torch.meshgrid(torch.arange(s, dtype=torch.float64), torch.arange(s, dtype=torch.float64), indexing="ij")
    rays = torch.stack([(u - c) / f, (v - c) / f, torch.ones_like(u)], -1)
    z_true = (n @ q) / (rays @ n)
    inner = F.max_pool2d(1 - out.mask, 3, 1, 1)[0, 0] < 0.5  # away from the silhouette
    assert inner.sum() > 0.5 * s * s
    err = (out.depth[0, 0].double() - z_true)[inner].abs().max().item()
    assert err < 2e-6

    # shading of a plane facing the camera: a + b * l_z, constant over the image
    lz = 1.0 / math.sqrt(0.4**2 + 0.7**2 + 1.0)
    shade = 0.3 + 0.6 * lz
    assert torch.allclose(out.shading, torch.full_like(out.shading, shade), atol=1e-5)
    expected = (0.2 * 0.5 + 0.5) * shade * 2 - 1
    assert (out.image[0][:, inner] - expected).abs().max().item() < 1e-5
    # view-space normal: the canonical (0, 0, 1) rotated by R
    nv = out.normal[0][:, inner].double()
    assert (nv - n[:, None]).abs().max().item() < 5e-5
    assert torch.allclose(out.canonical_normal, torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand_as(out.canonical_normal), atol=1e-6)
    # background outside the coverage
    if (out.mask == 0).any():
        assert torch.all(out.image[:, :, out.mask[0, 0] == 0] == 1.0)
        assert torch.all(out.depth[:, :, out.mask[0, 0] == 0] == cfg.bg_depth)


def test_normals_of_a_tilted_plane_match_closed_form():
    # plane through (0,0,1) with normal m: depth along each ray = (m . p0) / (m . ray)
    s, fov = 40, 10.0
    m = torch.tensor([0.3, -0.2, 1.0], dtype=torch.float64)
    m = m / m.norm()
    f, c = focal_length(s, fov), (s - 1) / 2
    v, u = torch.meshgrid(torch.arange(s, dtype=torch.float64), torch.arange(s, dtype=torch.float64), indexing="ij")
    rays = torch.stack([(u - c) / f, (v - c) / f, torch.ones_like(u)], -1)
    depth = ((m @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)) / (rays @ m)).view(1, 1, s, s)
    n = normals_from_depth(depth, fov)
    assert torch.allclose(n[0].permute(1, 2, 0), m.expand(s, s, 3), atol=1e-6)


# ------------------------------------------------------------------ canonical view and albedo
@pytest.mark.parametrize("texture", ["vertex", "grid"])
def test_canonical_view_reproduces_albedo_under_uniform_light(texture):
    s = 64
    r = MeshRenderer(RendererConfig(image_size=s, texture=texture))
    depth = bump_depth(s, 2)
    albedo = torch.rand(2, 3, s, s) * 2 - 1
    out = r.render(depth, albedo, View.identity(2), Light.uniform(2))
    assert out.mask.min().item() == 1.0
    assert (out.image - albedo).abs().max().item() < 1e-4
    assert (out.depth - depth).abs().max().item() < 1e-5
    lin = torch.linspace(-1, 1, s)
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    assert torch.allclose(out.grid, torch.stack([gx, gy], -1).expand(2, -1, -1, -1), atol=1e-4)
    assert (out.normal - out.canonical_normal).abs().max().item() < 1e-4


def test_grid_maps_view_pixels_to_their_canonical_source():
    s = 64
    r = MeshRenderer(RendererConfig(image_size=s))
    depth, albedo = bump_depth(s), smooth_albedo(s)
    out = r.render(depth, albedo, View.from_angles(yaw=20.0, pitch=-10.0), Light.uniform(1))
    sampled = F.grid_sample(albedo, out.grid, mode="bilinear", align_corners=True)
    m = out.mask[0, 0] > 0
    # vertex colours (linear over triangles) vs bilinear sampling of a smooth albedo
    assert (sampled - out.image)[0][:, m].abs().max().item() < 0.01


# ------------------------------------------------------------------ rotation round trip
@pytest.mark.parametrize("angle", [15.0, 35.0])
def test_rotate_then_rotate_back_returns_original_view(angle):
    s = 64
    r = MeshRenderer(RendererConfig(image_size=s))
    depth, albedo = bump_depth(s), smooth_albedo(s)
    a = r.render(depth, albedo, View.from_angles(yaw=angle), Light.uniform(1))
    # the rendered view becomes a new canonical mesh (only its covered part), rotated back
    back = r.render(a.depth, a.image, View.from_angles(yaw=-angle), Light.uniform(1), vertex_mask=a.mask)
    _, visible = r.warp_to_canonical(a.image, depth, View.from_angles(yaw=angle))
    region = (F.max_pool2d(1 - visible * back.mask, 3, 1, 1) < 0.5)[0, 0]  # eroded by 1 px
    assert region.sum() > 0.4 * s * s
    assert (back.image - albedo)[0][:, region].abs().max().item() < 0.02
    assert (back.depth - depth)[0, 0][region].abs().max().item() < 1e-3


def test_warp_to_canonical_recovers_albedo_where_visible():
    s = 64
    r = MeshRenderer(RendererConfig(image_size=s))
    depth, albedo = bump_depth(s), smooth_albedo(s)
    view = View.from_angles(yaw=-30.0, pitch=10.0)
    out = r.render(depth, albedo, view, Light.uniform(1))
    warped, visible = r.warp_to_canonical(out.image, depth, view, view_grid=out.grid)
    region = visible[0, 0] > 0
    assert region.sum() > 0.5 * s * s
    assert (warped - albedo)[0][:, region].abs().max().item() < 0.02
    # the side turned away from the camera (image right for yaw -30 on the bump's far flank) is
    # partly hidden: some canonical pixels must be reported invisible
    assert (visible[0, 0] == 0).sum() > 0


# ------------------------------------------------------------------ transformation map
def test_transform_map_keeps_background_still():
    s = 48
    r = MeshRenderer(RendererConfig(image_size=s))
    depth, albedo = bump_depth(s), smooth_albedo(s)
    view = View.from_angles(yaw=30.0)
    zero = r.render(depth, albedo, view, Light.uniform(1), transform_map=torch.zeros(1, 1, s, s))
    canon = r.render(depth, albedo, View.identity(1), Light.uniform(1))
    assert torch.allclose(zero.image, canon.image, atol=1e-5)
    one = r.render(depth, albedo, view, Light.uniform(1), transform_map=torch.ones(1, 1, s, s))
    plain = r.render(depth, albedo, view, Light.uniform(1))
    assert torch.allclose(one.image, plain.image, atol=1e-6)
    # T = 1 inside a disc, 0 outside: corners stay exactly where they were
    lin = torch.linspace(-1, 1, s)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    t = ((xx**2 + yy**2) < 0.5).float().view(1, 1, s, s)
    mixed = r.render(depth, albedo, view, Light.uniform(1), transform_map=t)
    assert torch.allclose(mixed.image[..., :4, :4], albedo[..., :4, :4], atol=1e-4)
    assert not torch.allclose(mixed.image[..., 20:28, 20:28], albedo[..., 20:28, 20:28], atol=1e-2)


# ------------------------------------------------------------------ rasterizer vs brute force
def _brute_force(screen: np.ndarray, faces: np.ndarray, s: int, perspective: bool = True):
    """Reference: every pixel against every triangle in float64, nearest wins, ties -> lowest id."""
    p2f = -np.ones((s, s), dtype=np.int64)
    zb = np.full((s, s), np.inf)
    for fi, (a, b, c) in enumerate(faces):
        (u0, v0, z0), (u1, v1, z1), (u2, v2, z2) = screen[a], screen[b], screen[c]
        area = (u1 - u0) * (v2 - v0) - (v1 - v0) * (u2 - u0)
        if abs(area) < 1e-10 or min(z0, z1, z2) <= 1e-3:
            continue
        for y in range(s):
            for x in range(s):
                w0 = ((u2 - u1) * (y - v1) - (v2 - v1) * (x - u1)) / area
                w1 = ((u0 - u2) * (y - v2) - (v0 - v2) * (x - u2)) / area
                w2 = 1 - w0 - w1
                if min(w0, w1, w2) < -1e-9:
                    continue
                z = 1 / (w0 / z0 + w1 / z1 + w2 / z2) if perspective else w0 * z0 + w1 * z1 + w2 * z2
                if z < zb[y, x] - 1e-9:
                    zb[y, x], p2f[y, x] = z, fi
    return p2f, zb


@pytest.mark.parametrize("max_candidates", [1 << 22, 7])
def test_rasterizer_matches_brute_force_on_random_overlapping_triangles(max_candidates):
    rng = np.random.default_rng(3)
    s, nf = 16, 12
    screen = np.concatenate([rng.uniform(-4, s + 3, (3 * nf, 2)), rng.uniform(0.8, 1.6, (3 * nf, 1))], 1)
    screen[:, :2] += rng.uniform(0.05, 0.45, (3 * nf, 2))  # keep vertices off pixel centres
    faces = np.arange(3 * nf).reshape(nf, 3)
    ref_p2f, ref_z = _brute_force(screen, faces, s)
    fr = rasterize(torch.tensor(screen, dtype=torch.float64)[None], torch.tensor(faces), s, max_candidates=max_candidates)
    p2f = fr.pix_to_face[0].numpy()
    covered = ref_p2f >= 0
    assert np.array_equal(p2f >= 0, covered)
    agree = p2f == ref_p2f
    # disagreements only where two faces are at the same depth within float32 round-off
    assert agree.mean() > 0.99
    assert np.allclose(fr.zbuf[0].numpy()[covered], ref_z[covered], rtol=1e-6)
    assert torch.all(fr.zbuf[0][~torch.tensor(covered)] == -1)


def test_rasterizer_tie_break_is_deterministic_lowest_face():
    # two identical triangles: the lower index must win everywhere
    tri = torch.tensor([[1.2, 1.3, 1.0], [9.7, 1.1, 1.0], [1.1, 9.6, 1.0]], dtype=torch.float32)
    screen = torch.cat([tri, tri])[None]
    faces = torch.tensor([[3, 4, 5], [0, 1, 2]])
    fr = rasterize(screen, faces, 12)
    covered = fr.pix_to_face[0] >= 0
    assert covered.sum() > 20 and torch.all(fr.pix_to_face[0][covered] == 0)


def test_sliver_triangle_on_a_pixel_centre_gives_finite_fragments():
    """A nearly collinear triangle (1e-4 px^2) with a vertex on a pixel centre, as a training run
    drew it (float32, 64 px): its edge functions cancel to 0 / 0. The fragments take the nearest
    vertex there and stay finite, forward and backward; ordinary faces are unchanged."""
    from importlib import import_module

    fragments_from_pix_to_face = import_module("digan.render.rasterize").fragments_from_pix_to_face
    sliver = [[10.4266872406, 62.2074508667, 1.0680345297], [3.0, 63.0, 1.0508793592], [10.6500644684, 62.1836128235, 1.0658304691]]
    normal = [[20.3, 20.4, 1.0], [27.6, 20.2, 1.2], [20.6, 27.7, 0.9]]
    screen = torch.tensor(sliver + normal, dtype=torch.float32)[None].requires_grad_()
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    p2f = torch.full((1, 64, 64), -1, dtype=torch.long)
    p2f[0, 63, 3] = 0
    p2f[0, 22, 22] = 1
    fr = fragments_from_pix_to_face(screen, faces, p2f)
    assert torch.isfinite(fr.bary).all() and torch.isfinite(fr.zbuf).all()
    torch.testing.assert_close(fr.bary[0, 63, 3], torch.tensor([0.0, 1.0, 0.0]))
    assert fr.zbuf[0, 63, 3].item() == pytest.approx(1.0508793592)
    # the ordinary face: perspective-correct barycentrics of the pixel centre, summing to 1
    b = fr.bary[0, 22, 22].double()
    assert b.min() > 0 and b.sum().item() == pytest.approx(1.0, abs=1e-6)
    tri = screen[0, 3:].detach().double()
    q = b * tri[:, 2]
    screen_b = q / q.sum()  # back to screen-space weights: they reproduce the pixel centre
    torch.testing.assert_close(screen_b @ tri[:, :2], torch.tensor([22.0, 22.0], dtype=torch.float64), atol=1e-4, rtol=0)
    (fr.bary.sum() + fr.zbuf.sum()).backward()
    assert torch.isfinite(screen.grad).all()


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("perspective_correct", [True, False])
def test_rasterizer_gradients_match_finite_differences(perspective_correct):
    torch.manual_seed(1)
    s = 8
    screen = torch.tensor(
        [[0.3, 0.4, 1.0], [7.6, 0.2, 1.2], [0.6, 7.7, 0.9], [7.8, 7.4, 1.1]], dtype=torch.float64
    )[None].requires_grad_()
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    attrs = torch.randn(1, 4, 2, dtype=torch.float64, requires_grad=True)
    wz = torch.randn(1, s, s, dtype=torch.float64)
    wa = torch.randn(1, 2, s, s, dtype=torch.float64)

    def fn(sc, at):
        fr = rasterize(sc, faces, s, perspective_correct)
        return (fr.zbuf * wz).sum() + (interpolate(fr, at) * wa).sum()

    assert torch.autograd.gradcheck(fn, (screen, attrs), eps=1e-6, atol=1e-5)


def test_renderer_gradients_match_finite_differences():
    s = 6
    r = MeshRenderer(RendererConfig(image_size=s))
    g = torch.Generator().manual_seed(0)
    depth = (bump_depth(s, dtype=torch.float64) + 0.01 * torch.rand(1, 1, s, s, generator=g, dtype=torch.float64)).requires_grad_()
    albedo = (torch.rand(1, 3, s, s, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_()
    rot = torch.tensor([[4.0, 7.0, 3.0]], dtype=torch.float64, requires_grad=True)
    trans = torch.tensor([[0.001, -0.002, 0.01]], dtype=torch.float64, requires_grad=True)
    amb = torch.tensor([0.4], dtype=torch.float64, requires_grad=True)
    ldir = torch.tensor([[0.3, -0.2]], dtype=torch.float64, requires_grad=True)
    wi = torch.randn(1, 3, s, s, generator=g, dtype=torch.float64)
    wd = torch.randn(1, 1, s, s, generator=g, dtype=torch.float64)
    wn = torch.randn(1, 3, s, s, generator=g, dtype=torch.float64)
    tmap = (0.6 + 0.4 * torch.rand(1, 1, s, s, generator=g, dtype=torch.float64)).requires_grad_()
    base_mask = r.render(depth, albedo, View(rot, trans), Light(amb, amb + 0.1, ldir), transform_map=tmap).mask.detach()

    def fn(dp, al, rt, tr, am, ld, tm):
        out = r.render(dp, al, View(rt, tr), Light(am, am + 0.1, ld), transform_map=tm)
        assert torch.equal(out.mask, base_mask)  # a finite difference must not change visibility
        return (out.image * wi).sum() + (out.depth * wd).sum() + (out.normal * wn).sum()

    assert torch.autograd.gradcheck(fn, (depth, albedo, rot, trans, amb, ldir, tmap), eps=1e-6, atol=1e-5)


def test_gradients_reach_depth_albedo_and_view_in_float32():
    s, b = 32, 2
    r = MeshRenderer(RendererConfig(image_size=s))
    depth = bump_depth(s, b).requires_grad_()
    albedo = smooth_albedo(s, b).requires_grad_()
    rot = torch.tensor([[5.0, 20.0, 0.0], [0.0, -25.0, 5.0]], requires_grad=True)
    out = r.render(depth, albedo, View(rot, torch.zeros(b, 3)), Light.make(0.5, 0.5, 0.2, 0.1, batch=b))
    (out.image.square().mean() + out.depth.mean()).backward()
    for t in (depth, albedo, rot):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


# ------------------------------------------------------------------ errors
def test_bad_inputs_give_one_line_errors():
    r = MeshRenderer(RendererConfig(image_size=16))
    with pytest.raises(DiganError, match="depth must be"):
        r.render(torch.ones(1, 1, 8, 8), torch.zeros(1, 3, 8, 8), View.identity(1), Light.uniform(1))
    with pytest.raises(DiganError, match="albedo must be"):
        r.render(torch.ones(1, 1, 16, 16), torch.zeros(1, 1, 16, 16), View.identity(1), Light.uniform(1))
    with pytest.raises(DiganError, match="image_size"):
        MeshRenderer(RendererConfig(image_size=2))
    with pytest.raises(DiganError, match="backend"):
        MeshRenderer(RendererConfig(image_size=16, backend="nope")).render(  # type: ignore[arg-type]
            torch.ones(1, 1, 16, 16), torch.zeros(1, 3, 16, 16), View.identity(1), Light.uniform(1)
        )
