"""Student building blocks against independent references: KAN bases vs scipy B-splines, partial
convolution vs a direct loop, the edge-gradient filter vs a hand-computed case, sub-network shapes
and output ranges."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy.interpolate import BSpline

from digan.student.gradfilter import edge_gradient_filter, edge_keep_mask, laplacian
from digan.student.kan import KANLinear, b_spline_bases, uniform_knots
from digan.student.networks import ComposeNet, DepthNet, LightNet, TransformNet, ViewNet
from digan.student.partialconv import PartialConv2d


# ---------------------------------------------------------------- KAN
@pytest.mark.parametrize("grid_size,order", [(5, 3), (4, 2), (7, 1)])
def test_bspline_bases_match_scipy(grid_size, order):
    t = uniform_knots(grid_size, order, (-1.0, 1.0)).double()
    x = torch.linspace(-1.0, 0.999, 97, dtype=torch.float64)[:, None]
    got = b_spline_bases(x, t, order)[:, 0].numpy()  # (N, n_bases)
    n_bases = grid_size + order
    assert got.shape == (97, n_bases)
    tn = t.numpy()
    for j in range(n_bases):
        ref = BSpline.basis_element(tn[j: j + order + 2], extrapolate=False)(x[:, 0].numpy())
        np.testing.assert_allclose(got[:, j], np.nan_to_num(ref), atol=1e-12)
    # partition of unity on the core range
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-12)


def test_kan_linear_matches_scipy_spline_sum():
    torch.manual_seed(1)
    layer = KANLinear(3, 2, grid_size=5, spline_order=3).double()
    with torch.no_grad():
        layer.spline_weight.normal_()
    x = torch.rand(11, 3, dtype=torch.float64) * 1.8 - 0.9
    y = layer(x).detach().numpy()
    t = layer.grid[0].double().numpy()
    xb, wb = x.numpy(), layer.base_weight.detach().numpy()
    coef = layer.scaled_spline_weight.detach().numpy()
    silu = xb / (1 + np.exp(-xb))
    ref = silu @ wb.T
    for o in range(2):
        for i in range(3):
            ref[:, o] += BSpline(t, coef[o, i], 3, extrapolate=False)(xb[:, i])
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)


def test_kan_linear_batched_shapes_and_grad():
    layer = KANLinear(8, 4)
    x = torch.randn(2, 5, 8, requires_grad=True)
    y = layer(x)
    assert y.shape == (2, 5, 4)
    y.sum().backward()
    assert layer.spline_weight.grad is not None and layer.spline_weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- partial conv
def test_partial_conv_all_ones_equals_plain_conv_inside_and_renormalises_border():
    torch.manual_seed(0)
    pc = PartialConv2d(3, 4, 3, padding=1, bias=True)
    plain = nn.Conv2d(3, 4, 3, padding=1, bias=True)
    plain.load_state_dict(pc.state_dict())
    x = torch.randn(2, 3, 7, 6)
    a, b = pc(x), plain(x)
    torch.testing.assert_close(a[..., 1:-1, 1:-1], b[..., 1:-1, 1:-1])
    # corner: 4 valid pixels of 9 -> zero-padded conv (without bias) * 9/4 + bias
    bias = pc.bias.view(1, -1)
    torch.testing.assert_close(a[..., 0, 0], (b[..., 0, 0] - bias) * 9 / 4 + bias)
    # edge (not corner): 6 valid pixels
    torch.testing.assert_close(a[..., 0, 3], (b[..., 0, 3] - bias) * 9 / 6 + bias)


def test_partial_conv_with_mask_matches_direct_loop():
    torch.manual_seed(0)
    pc = PartialConv2d(2, 3, 3, padding=1, bias=True).double()
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    m = (torch.rand(1, 1, 5, 5) > 0.6).double()
    m[..., 0, 4] = 0
    m[..., :, :] = m
    out, new_mask = pc(x, m, return_mask=True)
    W, bvec = pc.weight.detach().numpy(), pc.bias.detach().numpy()
    xp = np.pad(x[0].numpy(), ((0, 0), (1, 1), (1, 1)))
    mp = np.pad(m[0, 0].numpy(), 1)
    ref = np.zeros((3, 5, 5))
    refm = np.zeros((5, 5))
    for i in range(5):
        for j in range(5):
            mw = mp[i: i + 3, j: j + 3]
            s = mw.sum()
            if s == 0:
                continue
            refm[i, j] = 1
            for o in range(3):
                ref[o, i, j] = (W[o] * xp[:, i: i + 3, j: j + 3] * mw).sum() * 9 / s + bvec[o]
    np.testing.assert_allclose(out[0].detach().numpy(), ref, atol=1e-10)
    np.testing.assert_allclose(new_mask[0, 0].numpy(), refm)


# ---------------------------------------------------------------- edge-gradient filter
def test_edge_gradient_filter_hand_computed():
    # gradient supported on a 3x4 block of a 6x7 map: Laplacian(mask) is 0 only at the 1x2
    # interior of the block (and outside, where the gradient is 0 anyway)
    g = torch.zeros(1, 1, 6, 7)
    g[0, 0, 1:4, 2:6] = torch.arange(1.0, 13.0).view(3, 4)
    x = torch.zeros(1, 1, 6, 7, requires_grad=True)
    edge_gradient_filter(x).backward(g)
    expected = torch.zeros(6, 7)
    expected[2, 3] = g[0, 0, 2, 3]  # = 6
    expected[2, 4] = g[0, 0, 2, 4]  # = 7
    torch.testing.assert_close(x.grad[0, 0], expected)
    # hand value of the Laplacian at the block's corner: (4*1 - 2 neighbours) / 4 = 0.5
    lap = laplacian((g != 0).float())
    assert lap[0, 0, 1, 2].item() == pytest.approx(0.5)
    assert lap[0, 0, 2, 2].item() == pytest.approx(0.25)


def test_edge_gradient_filter_forward_identity_full_support_passes_and_3d_input():
    x = torch.randn(2, 5, 5, requires_grad=True)
    y = edge_gradient_filter(x)
    torch.testing.assert_close(y, x)
    g = torch.randn(2, 5, 5) + 10.0  # non-zero everywhere: reflect padding -> Laplacian 0 everywhere
    y.backward(g)
    torch.testing.assert_close(x.grad, g)
    assert edge_keep_mask(g).shape == g.shape


# ---------------------------------------------------------------- sub-networks
@pytest.mark.parametrize("use_kan", [True, False])
def test_view_and_light_nets_ranges(use_kan):
    D = 32
    dv = ViewNet(D, n_layers=3, hidden=16, use_kan=use_kan)
    dl = LightNet(D, n_layers=3, hidden=16, use_kan=use_kan)
    w = torch.randn(64, D) * 5 + 3
    dv.set_input_stats(w.mean(0), w.std(0))
    raw = dv(w)
    assert raw.shape == (64, 6) and raw.abs().max() <= 1
    view = dv.to_view(raw * 0 + 1)
    torch.testing.assert_close(view.rotation, torch.full((64, 3), 60.0))
    torch.testing.assert_close(view.translation[0], torch.tensor([0.1, 0.1, 0.01]))
    torch.testing.assert_close(dv.from_view(dv.to_view(raw)), raw)
    lr = dl(w)
    light = dl.to_light(lr)
    assert lr.shape == (64, 4)
    assert light.ambient.min() >= 0 and light.ambient.max() <= 1 and light.diffuse.min() >= 0 and light.diffuse.max() <= 1
    assert light.direction.shape == (64, 2) and light.direction.abs().max() <= 1
    torch.testing.assert_close(dl.from_light(light), lr)
    # model.light_diffuse_range: raw -1 / +1 map to the range's ends, ambient is untouched
    dl2 = LightNet(D, n_layers=3, hidden=16, use_kan=use_kan, diffuse_range=(0.3, 1.0))
    ends = dl2.to_light(torch.tensor([[-1.0, -1.0, 0.0, 0.0], [1.0, 1.0, 0.5, -0.5]]))
    torch.testing.assert_close(ends.diffuse, torch.tensor([0.3, 1.0]))
    torch.testing.assert_close(ends.ambient, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(dl2.from_light(dl2.to_light(lr)), lr)
    with pytest.raises(ValueError, match="diffuse_range"):
        LightNet(D, n_layers=3, hidden=16, diffuse_range=(0.5, 0.2))
    kinds = {type(m).__name__ for m in dv.modules()}
    assert ("KANLinear" in kinds) == use_kan and ("Linear" in kinds) != use_kan


def test_kan_input_standardisation_keeps_spline_branch_alive():
    D = 16
    dv = ViewNet(D, n_layers=2, hidden=8, use_kan=True)
    w = torch.randn(32, D) * 20 + 50  # like raw StyleGAN2 w: far outside the grid
    dv.set_input_stats(w.mean(0), w.std(0))
    first = dv.net[0]
    xin = dv.standardise(w)
    assert first.bases(xin).sum(-1).mean() > 0.95  # inside the grid: partition of unity mostly holds
    assert first.bases(w).sum(-1).mean() < 0.05  # raw w: the spline branch would be dead


@pytest.mark.parametrize("size,partial", [(32, True), (64, False)])
def test_depth_and_transform_nets_shapes(size, partial):
    D = 24
    ds = DepthNet(D, size, inject_dim=5, z_dim=16, nf=4, n_mlp=2, partial=partial)
    dt = TransformNet(D, size, z_dim=8, nf=4, n_mlp=2)
    w0 = torch.randn(3, D)
    x2 = torch.randn(3, 5, size, size)
    assert ds(w0, x2).shape == (3, 1, size, size)
    assert dt(w0).shape == (3, 1, size, size)
    kinds = {type(m).__name__ for m in ds.modules()}
    assert ("PartialConv2d" in kinds) == partial
    # partial and plain variants share parameter names and shapes
    other = DepthNet(D, size, inject_dim=5, z_dim=16, nf=4, n_mlp=2, partial=not partial)
    other.load_state_dict(ds.state_dict())


def test_depth_net_256_has_five_blocks():
    ds = DepthNet(8, 256, inject_dim=0, z_dim=8, nf=1, n_mlp=0)
    n_convt = sum(isinstance(m, nn.ConvTranspose2d) for m in ds.modules())
    assert n_convt == 1 + 5


@pytest.mark.parametrize("residual", [False, True])
def test_compose_net(residual):
    D = 16
    m = ComposeNet(D, hidden=16, residual=residual)
    w = torch.randn(4, D)
    out = m(w, torch.rand(4, 4) * 2 - 1, torch.zeros(4, 6))
    assert out.shape == (4, D)
    if residual:
        torch.testing.assert_close(out, w)  # zero-initialised last layer: w0 = w at start
