"""The pure-PyTorch rasterizer against PyTorch3D's (skipped where pytorch3d does not import)."""

from __future__ import annotations

import pytest
import torch

from digan.errors import DiganError
from digan.render import Light, MeshRenderer, RendererConfig, View, project_points, rasterize, resolve_backend
from digan.render.pytorch3d_backend import pytorch3d_available

needs_p3d = pytest.mark.skipif(not pytorch3d_available(), reason="pytorch3d is not installed (it needs a matching compiled build); the torch backend is used")


def _scene(s: int, b: int = 2):
    lin = torch.linspace(-1, 1, s)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    depth = (1.06 - 0.12 * torch.exp(-(xx**2 + yy**2) / 0.25)).expand(b, 1, s, s).clone()
    albedo = torch.stack([torch.sin(3 * xx), torch.cos(2 * yy), xx * yy]).expand(b, 3, s, s).clone()
    view = View(torch.tensor([[10.0, 25.0, 5.0], [-5.0, -35.0, 0.0]])[:b], torch.tensor([[0.01, 0.0, 0.02], [0.0, -0.01, 0.0]])[:b])
    return depth, albedo, view


def test_backend_selection_without_pytorch3d():
    assert resolve_backend("torch", torch.device("cpu")) == "torch"
    if not pytorch3d_available():
        assert resolve_backend("auto", torch.device("cpu")) == "torch"
        with pytest.raises(DiganError, match="pytorch3d"):
            resolve_backend("pytorch3d", torch.device("cpu"))


@needs_p3d
@pytest.mark.parametrize("perspective_correct", [True, False])
def test_fragments_match_pytorch3d(perspective_correct):
    from digan.render.pytorch3d_backend import rasterize_pytorch3d_raw

    s = 64
    depth, _, view = _scene(s)
    r = MeshRenderer(RendererConfig(image_size=s, backend="torch", perspective_correct=perspective_correct))
    _, verts = r.posed_points(depth, view)
    screen = project_points(verts.reshape(2, -1, 3), s, 10.0).detach()
    faces = r.faces()
    s1, s2 = screen.clone().requires_grad_(), screen.clone().requires_grad_()
    ours = rasterize(s1, faces, s, perspective_correct)
    p2f, zbuf, bary = rasterize_pytorch3d_raw(s2, faces, s, perspective_correct, bin_size=0)
    same = ours.pix_to_face == p2f
    assert torch.equal(ours.pix_to_face >= 0, p2f >= 0)
    assert same.float().mean() > 0.999  # exact depth ties may resolve differently
    assert torch.allclose(ours.zbuf[same], zbuf[same], atol=1e-5)
    assert torch.allclose(ours.bary[same], bary[same], atol=1e-4)
    # PyTorch3D's own backward pass against ours, on the pixels where both chose the same face
    g = torch.Generator().manual_seed(0)
    wz, wb = torch.randn(zbuf.shape, generator=g), torch.randn(bary.shape, generator=g)
    m = same.float()
    ((ours.zbuf * wz * m).sum() + (ours.bary * wb * m[..., None]).sum()).backward()
    ((zbuf * wz * m).sum() + (bary * wb * m[..., None]).sum()).backward()
    assert torch.allclose(s1.grad, s2.grad, atol=1e-4, rtol=1e-3)


@needs_p3d
def test_render_and_gradients_match_between_backends():
    s = 48
    depth, albedo, view = _scene(s)
    light = Light.make(0.4, 0.6, 0.3, -0.2, batch=2)
    outs, grads = [], []
    for backend in ("torch", "pytorch3d"):
        d = depth.clone().requires_grad_()
        a = albedo.clone().requires_grad_()
        out = MeshRenderer(RendererConfig(image_size=s, backend=backend)).render(d, a, view, light)
        (out.image.square().sum() + out.depth.sum()).backward()
        outs.append(out)
        grads.append((d.grad, a.grad))
    assert torch.allclose(outs[0].image, outs[1].image, atol=1e-4)
    assert torch.allclose(outs[0].depth, outs[1].depth, atol=1e-5)
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-3, rtol=1e-3)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-5)
