"""Student losses against direct computations; the nuclear-norm term's gradient by finite
differences; the perceptual loss's VGG16 loading path with a VGG-shaped state dict built here."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from digan.errors import DiganError, MissingAssetError
from digan.student import losses as L
from digan.student.perceptual import LaplacianPyramidLoss, VGG16Perceptual, build_perceptual


def test_photometric_and_symmetric_reconstruction_direct():
    torch.manual_seed(0)
    a, af, t = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    m = (torch.rand(2, 1, 8, 8) > 0.5).float()
    an, tn, mn = a.numpy(), t.numpy(), np.repeat(m.numpy(), 3, 1)
    assert L.photometric_loss(a, t).item() == pytest.approx(np.abs(an - tn).mean(), rel=1e-6)
    assert L.photometric_loss(a, t, m).item() == pytest.approx((np.abs(an - tn) * mn).sum() / mn.sum(), rel=1e-6)
    perc = lambda x, y, mask=None: ((x - y) ** 2).mean()  # noqa: E731
    total, parts = L.symmetric_reconstruction(a, af, t, perc, lam_perc=0.5, lam_flip=0.8)
    rec = np.abs(an - tn).mean() + 0.5 * ((an - tn) ** 2).mean()
    flip = np.abs(af.numpy() - tn).mean() + 0.5 * ((af.numpy() - tn) ** 2).mean()
    assert total.item() == pytest.approx(rec + 0.8 * flip, rel=1e-6)
    assert parts["rec"].item() == pytest.approx(rec, rel=1e-6)
    total0, parts0 = L.symmetric_reconstruction(a, af, t, perc, lam_perc=0.5, lam_flip=0.0)
    assert "flip" not in parts0 and total0.item() == pytest.approx(rec, rel=1e-6)


def test_identity_loss_direct_and_yaw_gate():
    torch.manual_seed(0)
    P = torch.randn(12, 5)
    embed = lambda x: x.flatten(1) @ P  # noqa: E731
    c, r = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    yaw = torch.tensor([10.0, -30.0, -24.0, 40.0])
    got = L.identity_loss(embed, c, r, yaw, max_yaw=25)
    e1 = embed(c).numpy()
    e2 = embed(r).numpy()
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 /= np.linalg.norm(e2, axis=1, keepdims=True)
    ref = ((e1 - e2) ** 2).sum(1)[[0, 2]].mean()
    assert got.item() == pytest.approx(ref, rel=1e-5)
    rr = r.clone().requires_grad_(True)
    zero = L.identity_loss(embed, c, rr, torch.tensor([30.0, 50.0, -26.0, 90.0]))
    assert zero.item() == 0.0
    zero.backward()  # still part of the graph


def test_albedo_rank_loss_matches_numpy():
    torch.manual_seed(0)
    alb = torch.rand(3, 3, 16, 16) * 2 - 1
    mask = (torch.rand(3, 1, 16, 16) > 0.3).float()
    got = L.albedo_rank_loss(alb, mask, pool=4).item()
    grey = alb.numpy().mean(1)
    k = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]]) / 4
    lap = np.stack([ndimage.correlate(g, k, mode="mirror") for g in grey]) * mask.numpy()[:, 0]
    pooled = lap.reshape(3, 4, 4, 4, 4).mean(axis=(2, 4))
    ref = np.linalg.svd(pooled.reshape(3, -1), compute_uv=False).sum()
    assert got == pytest.approx(ref, rel=1e-5)
    # LiftedGAN's blur-residual variant
    got2 = L.albedo_rank_loss(alb, None, pool=1, filter="blur_residual", blur_radius=2, blur_sigma=1.0).item()
    g1 = np.exp(-np.arange(-2, 3) ** 2 / 2.0)
    kk = np.outer(g1, g1)
    kk /= kk.sum()
    res = grey - np.stack([ndimage.correlate(g, kk, mode="mirror") for g in grey])
    assert got2 == pytest.approx(np.linalg.svd(res.reshape(3, -1), compute_uv=False).sum(), rel=1e-5)


def test_albedo_rank_loss_gradient_finite_differences():
    torch.manual_seed(0)
    alb = (torch.rand(3, 3, 8, 8, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    mask = (torch.rand(3, 1, 8, 8, dtype=torch.float64) > 0.2).double()
    f = lambda a: L.albedo_rank_loss(a, mask, pool=2)  # noqa: E731
    f(alb).backward()
    eps = 1e-6
    for k in range(4):  # central differences along random directions and one coordinate
        v = torch.randn_like(alb) if k < 3 else torch.zeros_like(alb).index_put_((torch.tensor(0), torch.tensor(1), torch.tensor(3), torch.tensor(4)), torch.tensor(1.0, dtype=torch.float64))
        with torch.no_grad():
            fd = (f(alb + eps * v) - f(alb - eps * v)) / (2 * eps)
        assert fd.item() == pytest.approx((alb.grad * v).sum().item(), rel=1e-6, abs=1e-8)


def test_cycle_and_w_regularizer_direct():
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    v1, v2 = torch.randn(5, 6), torch.randn(5, 6)
    la, lv = L.cycle_loss(a, b, v1, v2)
    assert la.item() == pytest.approx(((a - b) ** 2).mean().item())
    assert lv.item() == pytest.approx(((v1[:, :3] - v2[:, :3]) ** 2).mean().item())
    w, mu = torch.randn(5, 8), torch.randn(1, 8)
    assert L.w_regularizer(w, mu, 0.3).item() == pytest.approx((((w - mu) ** 2).mean() * 0.3).item())


def test_pose_anchor_loss_known_values_and_missed_faces():
    """Per axis the mean squared error over the rows with a target, then weighted (pitch, yaw);
    a missed face (NaN) is left out of its axis's mean; no target at all gives a zero that
    still back-propagates (no NaN gradient)."""
    pred = torch.tensor([[0.1, 0.2], [0.0, 0.5]], requires_grad=True)
    target = torch.tensor([[0.0, 0.1], [float("nan"), 0.3]])
    got = L.pose_anchor_loss(pred, target, (2.0, 3.0))
    assert got.item() == pytest.approx(2.0 * 0.01 + 3.0 * (0.01 + 0.04) / 2)
    got.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[1, 0] == 0  # the missed pitch sends nothing
    assert pred.grad[0, 1].item() == pytest.approx(3.0 * 2 * 0.1 / 2)
    none = L.pose_anchor_loss(pred, torch.full((2, 2), float("nan")), (1.0, 1.0))
    assert none.item() == 0 and none.requires_grad
    none.backward()
    assert torch.isfinite(pred.grad).all()


def test_gaussian_blur_matches_scipy():
    x = torch.rand(1, 2, 12, 12, dtype=torch.float64)
    got = L.gaussian_blur(x, 3, 1.5).numpy()
    g = np.exp(-np.arange(-3, 4) ** 2 / (2 * 1.5**2))
    k = np.outer(g, g) / np.outer(g, g).sum()
    for c in range(2):
        np.testing.assert_allclose(got[0, c], ndimage.correlate(x[0, c].numpy(), k, mode="mirror"), atol=1e-12)


# ---------------------------------------------------------------- perceptual
def _vgg_state(upto: int = 22) -> dict[str, torch.Tensor]:
    from torchvision.models.vgg import cfgs, make_layers

    feats = make_layers(cfgs["D"])[: upto + 1]
    return {f"features.{k}": v for k, v in feats.state_dict().items()}


def test_vgg16_loading_path_and_value(tmp_path):
    torch.manual_seed(0)
    sd = _vgg_state()
    p = tmp_path / "vgg16-397923af.pth"
    torch.save(sd, p)
    mod, info = build_perceptual("vgg16", str(p), n_scale=2)
    assert isinstance(mod, VGG16Perceptual) and info["perceptual"] == "vgg16"
    torch.testing.assert_close(mod.slices[0][0].weight, sd["features.0.weight"])
    torch.testing.assert_close(mod.slices[3][-2].weight, sd["features.21.weight"])
    # direct computation with torchvision's layer list
    from torchvision.models.vgg import cfgs, make_layers

    ref = make_layers(cfgs["D"])[:23]
    ref.load_state_dict({k[len("features."):]: v for k, v in sd.items()})
    a, b = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    vals = []
    for s in range(2):
        xa, xb = (F.avg_pool2d(a, 2**s) if s else a), (F.avg_pool2d(b, 2**s) if s else b)
        fa, fb = ((xa + 1) / 2 - mean) / std, ((xb + 1) / 2 - mean) / std
        for i, layer in enumerate(ref):
            fa, fb = layer(fa), layer(fb)
            if i in (8, 15, 22):
                vals.append((F.normalize(fa, dim=1) - F.normalize(fb, dim=1)).pow(2).sum(1).mean())
    with torch.no_grad():
        assert mod(a, b).item() == pytest.approx(torch.stack(vals).mean().item(), rel=1e-5)
    assert not any(p.requires_grad for p in mod.parameters())


def test_vgg16_bad_state_dict_and_missing_file(tmp_path, monkeypatch):
    sd = _vgg_state(15)  # stops before relu4_3
    with pytest.raises(DiganError, match="lack"):
        VGG16Perceptual(sd)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(MissingAssetError):
        build_perceptual("vgg16")
    with pytest.raises(MissingAssetError):
        build_perceptual("auto", str(tmp_path / "nope.pth"))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        mod, info = build_perceptual("auto")
    assert isinstance(mod, LaplacianPyramidLoss) and info["perceptual"] == "laplacian_pyramid"
    assert any("Laplacian" in str(w.message) for w in rec)
    assert build_perceptual("none")[0] is None


def test_laplacian_pyramid_loss_values():
    lp = LaplacianPyramidLoss(n_scale=3)
    a = torch.rand(2, 3, 32, 32)
    assert lp(a, a).item() == 0.0
    # a constant offset lives only in the low-pass level: loss = c / (n_scale + 1)
    assert lp(a + 0.4, a).item() == pytest.approx(0.4 / 4, rel=1e-4)


# ---------------------------------------------------------------- identity recogniser
def test_recognizer_torch_path_and_errors(tmp_path):
    from digan.student.identity import Recognizer, build_recognizer

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.Flatten())
    p = tmp_path / "rec.pt"
    torch.jit.save(torch.jit.script(net), str(p))
    rec, info = build_recognizer(f"torch:{p}", crop=(0.25, 0.25, 0.75, 0.75))
    assert isinstance(rec, Recognizer) and info["recognizer"] == "torch"
    img = torch.rand(2, 3, 64, 64) * 2 - 1
    ref = net(F.interpolate(img[..., 16:48, 16:48], size=(112, 112), mode="bilinear", align_corners=False))
    torch.testing.assert_close(rec(img), ref)
    assert build_recognizer("none")[0] is None
    with pytest.raises(MissingAssetError):
        build_recognizer(f"torch:{tmp_path / 'missing.pt'}")
    with pytest.raises(DiganError, match="discriminator"):
        build_recognizer("teacher_features", teacher=object())
    with pytest.raises(DiganError, match="unknown recogniser"):
        build_recognizer("arcface")


@pytest.mark.slow
def test_onnx_recognizer_matches_onnxruntime(face_models):
    pytest.importorskip("onnx2torch")
    import onnxruntime as ort

    from digan.student.identity import build_recognizer

    path = face_models / "mobilefacenet_arcface_w128.onnx"
    rec, info = build_recognizer(f"onnx:{path}", crop=(0, 0, 1, 1))
    assert rec.per_sample  # the graph ends with a Reshape to [1, -1]
    x = (torch.rand(2, 3, 112, 112) * 2 - 1).requires_grad_(True)
    emb = rec(x)
    assert emb.shape == (2, 128)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    ref = np.concatenate([sess.run(None, {name: x[i: i + 1].detach().numpy()})[0] for i in range(2)])
    np.testing.assert_allclose(emb.detach().numpy(), ref, atol=1e-3, rtol=1e-3)
    emb.sum().backward()
    assert x.grad.abs().sum() > 0  # differentiable, unlike onnxruntime


def test_discriminator_features_recognizer(tmp_path):
    from digan.student.identity import DiscriminatorFeatures, Recognizer, build_recognizer
    from digan.teacher.api import load_teacher
    from digan.teacher.checkpoint import make_checkpoint, save_checkpoint
    from digan.teacher.model import Discriminator, Generator, StyleGAN2Config

    cfg = StyleGAN2Config(size=16, style_dim=8, n_mlp=1, channels={4: 8, 8: 8, 16: 8})
    g, d = Generator(cfg), Discriminator(cfg)
    save_checkpoint(tmp_path / "t.pt", make_checkpoint(g, cfg, d=d))
    teacher = load_teacher(tmp_path / "t.pt", n_mean=64)
    rec, info = build_recognizer("auto", teacher)
    assert isinstance(rec, Recognizer) and "discriminator proxy" in info["recognizer"]
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    f = rec(x)
    assert f.shape == (3, 8)
    torch.testing.assert_close(rec(x[1:2]), f[1:2])  # per-sample: independent of the batch
    # equals the discriminator's own pipeline when its batch-stddev feature is the per-sample constant
    feats = DiscriminatorFeatures(d)(x[:1])
    out = d.convs(x[:1])
    y = torch.full((1, d.stddev_feat, out.shape[2], out.shape[3]), 1e-4)
    ref = d.final_linear[0](d.final_conv(torch.cat([out, y], 1)).reshape(1, -1))
    torch.testing.assert_close(feats, ref)
    # a checkpoint without 'd' falls back to no identity loss in auto mode
    save_checkpoint(tmp_path / "g.pt", make_checkpoint(g, cfg))
    with pytest.warns(UserWarning, match="identity loss is off"):
        assert build_recognizer("auto", load_teacher(tmp_path / "g.pt", n_mean=64))[0] is None


def _landmark_scene(s: int = 33, yaw: float = 25.0, nose: float = -0.03):
    """A depth map (1,1,S,S) with a nose bump on the centre column, the five landmarks' canonical
    pixels, and their detector-style keypoints (pixel i spans [i, i+1)) at ``yaw``, projected by
    the renderer's own camera functions."""
    from digan.render import MeshRenderer, RendererConfig
    from digan.render.camera import depth_to_points, project_points, transform_points
    from digan.render.types import View

    r = MeshRenderer(RendererConfig(image_size=s, backend="torch"))
    c = (s - 1) // 2
    yy, xx = torch.meshgrid(torch.arange(s, dtype=torch.float32), torch.arange(s, dtype=torch.float32), indexing="ij")
    bump = torch.exp(-((xx - c) ** 2 + (yy - (c + 2)) ** 2) / (2 * 2.0 ** 2))
    flat = torch.full((1, 1, s, s), 1.0)
    depth = flat + nose * bump[None, None]
    marks = [(c - 6, c - 4), (c + 6, c - 4), (c, c + 2), (c - 5, c + 7), (c + 5, c + 7)]  # (col, row)
    view = View.from_angles(yaw)
    pts = transform_points(depth_to_points(depth, r.config.fov), view, r.config.pivot)
    uv = project_points(pts, s, r.config.fov)[0]
    kps = torch.stack([uv[row, col, :2] for col, row in marks])[None] + 0.5
    return r, depth, flat, view, kps


def test_landmark_parallax_loss_is_zero_at_the_true_relief_and_pulls_a_flat_nose_out():
    from digan.render.types import Light

    r, depth, flat, view, kps = _landmark_scene()
    albedo, light = torch.zeros(1, 3, *depth.shape[2:]), Light.uniform(1)
    true = r.render(depth, albedo, view, light)
    assert L.landmark_parallax_loss(true.grid, true.mask, kps).item() < 0.05  # canonical px (Huber: a miss under 0.3 px)
    # the same keypoints on a face without its nose: the tip is carried back beside the
    # midline by relief * tan(yaw) * focal = 0.03 * 0.466 * 183 = 2.56 canonical px (the image
    # offset relief * sin(yaw), foreshortened by cos(yaw) on the flat face)
    d = flat.clone().requires_grad_(True)
    out = r.render(d, albedo, view, light)
    loss = L.landmark_parallax_loss(out.grid, out.mask, kps)
    assert loss.item() == pytest.approx(2.56 - 0.5, abs=0.15)  # Huber (1 px)
    loss.backward()
    # descending it brings the depth under the seen nose tip toward the camera (smaller z)
    c = (depth.shape[-1] - 1) // 2
    g = d.grad[0, 0]
    assert g[c - 1:c + 6, c - 3:c + 4].sum().item() > 0
    assert g.abs().sum().item() > 0


def test_landmark_parallax_loss_leaves_out_missed_and_off_surface_faces():
    from digan.render.types import Light

    r, depth, flat, view, kps = _landmark_scene()
    d = flat.expand(3, -1, -1, -1).clone()
    out = r.render(d, torch.zeros(3, 3, *d.shape[2:]), View3(view), Light.uniform(3))
    one = L.landmark_parallax_loss(out.grid[:1], out.mask[:1], kps)
    missed = kps.clone()
    missed[0, 2] = float("nan")  # no face found
    off = kps.clone()
    off[0, 0, 0] = -5.0  # a landmark off the image: not on the surface
    both = L.landmark_parallax_loss(out.grid, out.mask, torch.cat([kps, missed, off]))
    assert both.item() == pytest.approx(one.item(), rel=1e-5)
    g = out.grid.detach().requires_grad_(True)
    none = L.landmark_parallax_loss(g, out.mask, torch.full((3, 5, 2), float("nan")))
    assert none.item() == 0.0
    none.backward()  # still on the graph
    assert g.grad is not None


def View3(view):
    from digan.render.types import View

    return View(view.rotation.expand(3, -1), view.translation.expand(3, -1))
