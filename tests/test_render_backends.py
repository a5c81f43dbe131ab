"""The PyTorch3D backend against real PyTorch3D and against the torch backend.

Tests marked ``needs_p3d`` skip where ``pytorch3d`` does not import (the main environment). CI
runs this file a second time in ``.venv-p3d`` (``scripts/install_p3d.sh``: PyPI's
``easypytorch3d`` 0.7.9 beside torch 2.12.1), where they run against the real library.

What is compared, and why:

* **visibility** (which pixels are covered): must agree on every view, the canonical one
  (yaw = pitch = roll = 0, every pixel centre on a mesh vertex) included;
* **raw PyTorch3D barycentrics and depth** only on pixels where both chose the same face
  (empty pixels hold -1 in PyTorch3D, 0 in ours; tied faces at shared vertices and edges order
  their barycentrics differently). Without perspective correction PyTorch3D's barycentrics are
  ``w / (area + 1e-8)`` in NDC, so they are compared with ours times ``area / (area + 1e-8)``;
* **where tied faces differ**, a random per-vertex attribute interpolated with each side's own
  face and barycentrics must agree (ties do not change what is drawn);
* **renders and gradients** of ``MeshRenderer`` with both backends: IoU, image and depth, and
  gradient cosine for depth, albedo, light and (off the canonical view) view parameters.
"""

from __future__ import annotations

import os

import pytest
import torch

from digan.errors import DiganError
from digan.render import Light, MeshRenderer, RendererConfig, View, project_points, rasterize, resolve_backend
from digan.render import pytorch3d_backend as p3d_mod
from digan.render.pytorch3d_backend import P3D_AREA_EPS, pytorch3d_available
from digan.render.rasterize import interpolate, tie_tolerance

needs_p3d = pytest.mark.skipif(
    not pytorch3d_available(),
    reason="pytorch3d is not installed here; CI runs these in .venv-p3d (scripts/install_p3d.sh)",
)


def _scene(s: int, b: int = 2):
    lin = torch.linspace(-1, 1, s)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    depth = (1.06 - 0.12 * torch.exp(-(xx**2 + yy**2) / 0.25)).expand(b, 1, s, s).clone()
    albedo = torch.stack([torch.sin(3 * xx), torch.cos(2 * yy), xx * yy]).expand(b, 3, s, s).clone()
    return depth, albedo


def _view(name: str, b: int = 2) -> View:
    z = torch.zeros(b, 3)
    if name == "canonical":  # every pixel centre lies exactly on a vertex
        return View(z.clone(), z.clone())
    if name == "posed":
        return View(torch.tensor([[10.0, 25.0, 5.0], [-5.0, -35.0, 0.0]])[:b], torch.tensor([[0.01, 0.0, 0.02], [0.0, -0.01, 0.0]])[:b])
    if name == "pitch":  # with an odd size the centre column of vertices stays on pixel centres
        return View(torch.tensor([[15.0, 0.0, 0.0], [-20.0, 0.0, 0.0]])[:b], z.clone())
    if name == "translated":
        return View(z.clone(), torch.tensor([[0.004, -0.003, 0.01], [-0.002, 0.005, 0.0]])[:b])
    raise ValueError(name)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-300))


def _iou(m1: torch.Tensor, m2: torch.Tensor) -> float:
    m1, m2 = m1 > 0, m2 > 0
    return float((m1 & m2).sum()) / max(float((m1 | m2).sum()), 1.0)


# ------------------------------------------------------------------ always (torch backend only)
def test_pytorch3d_present_where_required():
    """CI sets DIGAN_BENCH_REQUIRE_PYTORCH3D=1 in .venv-p3d so that the tests below cannot skip."""
    if os.environ.get("DIGAN_BENCH_REQUIRE_PYTORCH3D") == "1":
        assert pytorch3d_available(), "pytorch3d does not import in the environment that must test it"


def test_backend_selection_without_pytorch3d(monkeypatch):
    assert resolve_backend("torch", torch.device("cpu")) == "torch"
    with pytest.raises(DiganError, match="unknown renderer backend"):
        resolve_backend("nope", torch.device("cpu"))
    monkeypatch.setattr(p3d_mod, "pytorch3d_available", lambda: False)
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    with pytest.raises(DiganError, match="pytorch3d"):
        resolve_backend("pytorch3d", torch.device("cpu"))


def test_auto_picks_the_backend_measured_faster(monkeypatch, tmp_path):
    """``auto`` follows the recorded ``bench renderer`` figures (nearest size), not an assumption."""
    from digan.render import bench

    monkeypatch.setenv("DIGAN_BENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(p3d_mod, "pytorch3d_available", lambda: True)
    monkeypatch.setattr(bench, "_MEMO", {})
    monkeypatch.setattr(bench, "_SESSION", {})
    measured = []
    monkeypatch.setattr(bench, "_quick_measure", lambda dev, size: measured.append(size))

    def rec(size, t_ms, p_ms):
        base = dict(device="cpu", batch=4, size=size, threads=torch.get_num_threads())
        bench.record_backend_speeds({**base, "forward_backward_ms": t_ms}, {**base, "forward_backward_ms": p_ms}, "test")

    rec(64, 10.0, 5.0)  # PyTorch3D faster at 64 px
    rec(256, 10.0, 50.0)  # torch faster at 256 px
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu, 48) == "pytorch3d"
    assert resolve_backend("auto", cpu, 512) == "torch"
    assert measured == []
    assert bench.backend_cache_path().is_file()
    # a different device (here: another thread count) has no record: it is measured once
    monkeypatch.setattr(torch, "get_num_threads", lambda: 97)
    assert resolve_backend("auto", cpu, 64) == "torch"  # the stub records nothing
    assert measured == [64]


@pytest.mark.parametrize("size", [64, 512])
def test_canonical_view_covers_every_pixel_with_the_vertex_values(size):
    """Closed-triangle tie rule: at the canonical view every pixel centre is a vertex, and the
    render is the canonical map itself (512 px had holes with the old fixed 1e-5 tolerance)."""
    depth, albedo = _scene(size, 1)
    r = MeshRenderer(RendererConfig(image_size=size, backend="torch"))
    _, verts = r.posed_points(depth, _view("canonical", 1))
    screen = project_points(verts.reshape(1, -1, 3), size, r.config.fov)
    frags = rasterize(screen, r.faces(), size)
    assert bool((frags.pix_to_face >= 0).all())
    attr = torch.rand(1, size * size, 2, generator=torch.Generator().manual_seed(1))
    pix = interpolate(frags, attr)
    assert torch.allclose(pix, attr.reshape(1, size, size, 2).permute(0, 3, 1, 2), atol=1e-4)
    assert torch.allclose(frags.zbuf, depth[:, 0], atol=1e-6 * size)
    assert tie_tolerance(64) == 1e-5 and tie_tolerance(256) == 1e-5  # ordinary sizes unchanged


# ------------------------------------------------------------------ against real PyTorch3D
def _raw_pair(s: int, view_name: str, perspective_correct: bool):
    from digan.render.pytorch3d_backend import rasterize_pytorch3d_raw

    depth, _ = _scene(s)
    r = MeshRenderer(RendererConfig(image_size=s, backend="torch", perspective_correct=perspective_correct))
    _, verts = r.posed_points(depth, _view(view_name))
    screen = project_points(verts.reshape(2, -1, 3), s, r.config.fov).detach()
    faces = r.faces()
    s1, s2 = screen.clone().requires_grad_(), screen.clone().requires_grad_()
    ours = rasterize(s1, faces, s, perspective_correct)
    p2f, zbuf, bary = rasterize_pytorch3d_raw(s2, faces, s, perspective_correct, bin_size=0)
    return faces, s1, s2, ours, p2f, zbuf, bary


def _p3d_area_scale(s1: torch.Tensor, faces: torch.Tensor, ours, s: int) -> torch.Tensor:
    """(B,H,W) ``area / (area + 1e-8)`` of each covered pixel's face, area in NDC (differentiable)."""
    b, h, w = ours.pix_to_face.shape
    bidx = torch.div(ours.index, h * w, rounding_mode="floor")
    tri = s1[bidx[:, None], ours.face_verts][..., :2] * (2.0 / s)  # NDC scale (the flips keep |area|)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    area = (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).abs()
    k = area / (area + P3D_AREA_EPS)
    return s1.new_ones(b * h * w).index_put((ours.index,), k).view(b, h, w)


@needs_p3d
@pytest.mark.parametrize("view_name", ["posed", "canonical"])
@pytest.mark.parametrize("perspective_correct", [True, False])
def test_fragments_match_pytorch3d(view_name, perspective_correct):
    s = 48
    faces, s1, s2, ours, p2f, zbuf, bary = _raw_pair(s, view_name, perspective_correct)
    cov_o, cov_p = ours.pix_to_face >= 0, p2f >= 0
    assert torch.equal(cov_o, cov_p), f"coverage differs on {int((cov_o ^ cov_p).sum())} pixels"
    assert float(cov_o.float().mean()) > 0.3
    # PyTorch3D's empty-pixel convention (never compared with ours, which is 0 there)
    assert bool((bary[~cov_p] == -1).all()) and bool((zbuf[~cov_p] == -1).all())
    same = (ours.pix_to_face == p2f) & cov_o
    if view_name == "posed":
        assert float(same.sum()) / float(cov_o.sum()) > 0.999  # exact depth ties may resolve differently
    assert float(same.sum()) > 100
    k = torch.ones_like(ours.zbuf) if perspective_correct else _p3d_area_scale(s1, faces, ours, s)
    # the 1e-8 NDC area epsilon: relative size 1e-8 / area, ~1e-4 in depth at 48 px without
    # perspective correction; modelled exactly, the rest is float32 round-off. PyTorch3D works in
    # NDC, where coordinates near 1 carry ~6e-8 absolute error against edges of ~0.04 (48 px),
    # so barycentrics of thin triangles differ by up to ~2e-5 (measured 1.7e-5), depth by ~2e-7.
    assert torch.allclose((ours.zbuf * k)[same], zbuf[same], atol=3e-6)
    assert torch.allclose((ours.bary * k[..., None])[same], bary[same], atol=5e-5)
    if not perspective_correct:
        gap = (ours.zbuf[same] - zbuf[same]).abs().max()
        assert gap <= float((1 - k[same]).detach().max() * 1.2) + 3e-6
    # where tied faces differ (shared vertices/edges) the interpolated values agree
    attr = torch.rand(2, s * s, 3, generator=torch.Generator().manual_seed(2))
    flat = p2f.reshape(-1)
    idx = torch.nonzero(flat >= 0).squeeze(1)
    bidx = torch.div(idx, s * s, rounding_mode="floor")
    vals_p = (bary.reshape(-1, 3)[idx][..., None] * attr[bidx[:, None], faces[flat[idx]]]).sum(1)
    vals_o = interpolate(ours, attr).permute(0, 2, 3, 1).reshape(-1, 3)[idx]
    kk = k.detach().reshape(-1)[idx][:, None]
    assert torch.allclose(vals_o * kk, vals_p, atol=5e-5)
    # PyTorch3D's own backward pass against ours, on the pixels where both chose the same face
    g = torch.Generator().manual_seed(0)
    wz, wb = torch.randn(zbuf.shape, generator=g), torch.randn(bary.shape, generator=g)
    m = same.float()
    ((ours.zbuf * k * wz * m).sum() + (ours.bary * k[..., None] * wb * m[..., None]).sum()).backward()
    ((zbuf * wz * m).sum() + (bary * wb * m[..., None]).sum()).backward()
    assert _cos(s1.grad, s2.grad) > 0.99999
    assert torch.allclose(s1.grad, s2.grad, atol=2e-4 * float(s2.grad.abs().max()))


@needs_p3d
def test_strict_pytorch3d_rule_fails_at_the_canonical_view():
    """The bug the tie rule fixes: PyTorch3D's strict inside test draws almost nothing there."""
    from digan.render.pytorch3d_backend import rasterize_pytorch3d_raw

    s = 48
    depth, _ = _scene(s)
    r = MeshRenderer(RendererConfig(image_size=s, backend="torch"))
    _, verts = r.posed_points(depth, _view("canonical"))
    screen = project_points(verts.reshape(2, -1, 3), s, r.config.fov)
    strict, _, _ = rasterize_pytorch3d_raw(screen, r.faces(), s, tie_tolerance_ndc=0.0, bin_size=0)
    assert float((strict >= 0).float().mean()) < 0.5  # round-off lets some pixel centres in


@needs_p3d
@pytest.mark.parametrize(
    "view_name,size,masked",
    [("canonical", 48, False), ("posed", 48, False), ("pitch", 49, False), ("translated", 48, False), ("canonical", 33, True), ("posed", 33, True)],
)
def test_render_and_gradients_match_between_backends(view_name, size, masked):
    s = size
    depth, albedo = _scene(s)
    base_view = _view(view_name)
    tmap = None
    vmask = None
    if masked:
        lin = torch.linspace(-1, 1, s)
        yy, xx = torch.meshgrid(lin, lin, indexing="ij")
        vmask = ((xx**2 + yy**2) < 0.7).float().expand(2, 1, s, s)
        tmap = torch.nn.functional.avg_pool2d(vmask, 5, 1, 2)
    outs, grads = [], []
    for backend in ("torch", "pytorch3d"):
        d = depth.clone().requires_grad_()
        a = albedo.clone().requires_grad_()
        rot, trans = base_view.rotation.clone().requires_grad_(), base_view.translation.clone().requires_grad_()
        amb, dif, ldir = torch.tensor([0.4, 0.5]), torch.tensor([0.6, 0.5]), torch.tensor([[0.3, -0.2], [-0.1, 0.25]])
        amb, dif, ldir = (x.clone().requires_grad_() for x in (amb, dif, ldir))
        r = MeshRenderer(RendererConfig(image_size=s, backend=backend))
        out = r.render(d, a, View(rot, trans), Light(amb, dif, ldir), transform_map=tmap, vertex_mask=vmask)
        (out.image.square().sum() + out.depth.sum() + out.normal.sum()).backward()
        outs.append(out)
        grads.append({"depth": d.grad, "albedo": a.grad, "light": torch.cat([amb.grad, dif.grad, ldir.grad.flatten()]),
                      "view": torch.cat([rot.grad.flatten(), trans.grad.flatten()])})
    o1, o2 = outs
    iou = _iou(o1.mask, o2.mask)
    assert iou == 1.0, f"IoU {iou:.6f}"
    assert torch.allclose(o1.image, o2.image, atol=1e-5)
    assert torch.allclose(o1.depth, o2.depth, atol=1e-5)
    assert torch.allclose(o1.normal, o2.normal, atol=1e-5)
    for name in ("depth", "albedo", "light"):
        g1, g2 = grads[0][name], grads[1][name]
        c = _cos(g1, g2)
        assert c > 0.99999, f"{name} gradient cosine {c:.6f}"
        assert torch.allclose(g1, g2, atol=1e-4 * float(g1.abs().max()) + 1e-7), name
    # View-angle derivatives at pixel centres that lie exactly on shared vertices or edges are
    # one-sided: they depend on which tied face wins, which float32 round-off decides in each
    # backend (module docstring of digan.render.rasterize). Exact off the tie views.
    c = _cos(grads[0]["view"], grads[1]["view"])
    assert c > (0.99 if view_name in ("canonical", "pitch") else 0.99999), f"view gradient cosine {c:.6f}"


@needs_p3d
def test_auto_measures_and_picks_torch_on_cpu(monkeypatch, tmp_path):
    """With no record, ``auto`` measures both backends once and follows the figures (on a CPU,
    where PyTorch3D has only its naive rasterizer, that is the torch backend; speed itself is
    not asserted here, the choice must follow the measurement)."""
    import json

    from digan.render import bench

    monkeypatch.setenv("DIGAN_BENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(bench, "_MEMO", {})
    monkeypatch.setattr(bench, "_SESSION", {})
    choice = resolve_backend("auto", torch.device("cpu"), 32)
    (entries,) = json.loads(bench.backend_cache_path().read_text()).values()
    (e,) = entries
    assert e["size"] == 32 and e["pytorch3d_ms"] > 0 and e["torch_ms"] > 0
    assert choice == ("pytorch3d" if e["pytorch3d_ms"] < e["torch_ms"] else "torch")
    print(f"quick measurement 2x32 px: pytorch3d {e['pytorch3d_ms']:.1f} ms vs torch {e['torch_ms']:.1f} ms -> {choice}")


@needs_p3d
def test_bench_both_backends_records_the_ratio(monkeypatch, tmp_path):
    from digan.render import bench

    monkeypatch.setenv("DIGAN_BENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(bench, "_MEMO", {})
    monkeypatch.setattr(bench, "_SESSION", {})
    res = bench.run_renderer_bench(bench.BenchConfig(cases=[(2, 24)], repeats=1, devices=["cpu"], backend="both", threads=1))
    assert [r["backend"] for r in res] == ["torch", "pytorch3d"]
    assert res[1]["speed_ratio"] == pytest.approx(res[1]["forward_backward_ms"] / res[0]["forward_backward_ms"])
    assert bench.measured_faster_backend(torch.device("cpu"), 24, measure=False) in ("torch", "pytorch3d")
