"""HoloGAN: latent transform, volume rotation convention (exact 90-degree permutations, blob
centroids vs the renderer's transform), AdaIN and spectral norm against closed forms, the
one-optimiser gradient routing against separately computed player gradients, training on the
tiny synthetic set with bit-exact resume, the CLI and the ``hologan`` method."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from baselines.hologan import (
    AdaIN,
    HoloGAN,
    HoloGANObjective,
    HoloGANOptions,
    _SNConv2d,
    gaussian_to_uniform,
    rotate_volume,
)
from digan.errors import DiganError


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory):
    from digan.data.synth import generate_synth

    out = tmp_path_factory.mktemp("holo") / "synth"
    generate_synth(out, n=8, size=64, seed=0)
    return out


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    from digan.student.testing import save_random_teacher

    p = tmp_path_factory.mktemp("holo_t") / "teacher.pt"
    save_random_teacher(p, size=32, style_dim=32, width=16)
    return p


def test_gaussian_to_uniform_is_the_normal_cdf():
    from scipy.stats import norm

    z = torch.linspace(-4, 4, 81, dtype=torch.float64)
    np.testing.assert_allclose(gaussian_to_uniform(z).numpy(), 2 * norm.cdf(z.numpy()) - 1, atol=1e-12)


def test_rotate_volume_quarter_turns_follow_the_renderer_convention():
    n = 8
    vol = torch.randn(2, 3, n, n, n, dtype=torch.float64)
    z = torch.zeros(2, dtype=torch.float64)
    torch.testing.assert_close(rotate_volume(vol, z, z), vol)
    # yaw +90: the front (small depth index, nearest the camera) moves to image +x (large column)
    exp = torch.empty_like(vol)
    for d in range(n):
        for w in range(n):
            exp[:, :, w, :, n - 1 - d] = vol[:, :, d, :, w]
    torch.testing.assert_close(rotate_volume(vol, z + 90, z), exp, rtol=1e-9, atol=1e-9)
    # pitch +90: the front moves to image +y (down, large row)
    exp = torch.empty_like(vol)
    for d in range(n):
        for h in range(n):
            exp[:, :, h, n - 1 - d, :] = vol[:, :, d, h, :]
    torch.testing.assert_close(rotate_volume(vol, z, z + 90), exp, rtol=1e-9, atol=1e-9)


def test_rotate_volume_moves_a_blob_like_the_renderer():
    from digan.render.camera import transform_points
    from digan.render.types import View

    n = 32
    c = (torch.arange(n, dtype=torch.float64) * 2 + 1) / n - 1  # voxel centres in [-1, 1]
    zz, yy, xx = torch.meshgrid(c, c, c, indexing="ij")
    p = torch.tensor([0.25, -0.2, -0.35], dtype=torch.float64)  # (x, y, z): in front of the centre
    blob = torch.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2 + (zz - p[2]) ** 2) / (2 * 0.06**2))[None, None]
    yaw, pitch = 30.0, 15.0
    out = rotate_volume(blob, torch.tensor([yaw], dtype=torch.float64), torch.tensor([pitch], dtype=torch.float64))[0, 0]
    m = out.sum()
    centroid = torch.stack([(out * xx).sum(), (out * yy).sum(), (out * zz).sum()]) / m
    expected = transform_points(p.float()[None, None], View.from_angles(yaw, pitch), pivot_depth=0.0)[0, 0]
    np.testing.assert_allclose(centroid.numpy(), expected.double().numpy(), atol=0.02)
    assert float(m) == pytest.approx(float(blob.sum()), rel=0.02)  # a rotation keeps the mass


def test_adain_sets_channel_statistics():
    ada = AdaIN(5, 4)
    x = torch.randn(3, 4, 6, 7) * 3 + 2
    u = torch.rand(3, 5) * 2 - 1
    out = ada(x, u)
    sb = F.relu(ada.map(u))
    s, b = sb[:, :4], sb[:, 4:]
    torch.testing.assert_close(out.mean((2, 3)), b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.std((2, 3), unbiased=False), s, rtol=1e-3, atol=1e-4)


def test_spectral_norm_converges_to_the_largest_singular_value():
    conv = _SNConv2d(3, 5, 3, 1, 1)
    conv.train()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        for _ in range(200):
            conv(x)
    sigma = torch.linalg.svdvals(conv.weight.reshape(5, -1))[0]
    conv.eval()
    out = conv(x)
    ref = F.conv2d(x, conv.weight / sigma, conv.bias, 1, 1)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    # frozen: same values, no gradient to the weights
    out_f = conv(x, frozen=True)
    torch.testing.assert_close(out_f, out)
    assert not out_f.requires_grad


def _tiny_opts(**kw) -> HoloGANOptions:
    base = dict(size=32, z_dim=8, gf=4, df=4, lambda_latent=0.5)
    base.update(kw)
    return HoloGANOptions(**base)


def test_one_optimiser_step_gives_each_player_its_own_gradient():
    """total.backward() == grad of L_D for D and grad of L_G (through a frozen D copy) for G."""
    from digan.student.testing import random_teacher

    teacher = random_teacher(32, 16, 8)
    torch.manual_seed(0)
    core = HoloGAN(_tiny_opts())
    ref = copy.deepcopy(core)
    obj = HoloGANObjective(core, teacher, core.opts)
    z = torch.randn(3, 16)
    torch.manual_seed(123)
    total, logs = obj(z)
    total.backward()
    got_d = [p.grad.clone() for p in core.discriminator.parameters()]
    got_g = [p.grad.clone() for p in core.generator.parameters()]
    assert set(logs) >= {"d_real", "d_fake", "d_style", "g_adv", "g_style", "latent", "total"}

    # independent recomputation with the same random draws
    torch.manual_seed(123)
    o = ref.opts
    u = torch.erf(z[:, : o.z_dim] / math.sqrt(2))
    yaw = ((torch.rand(3) * 2 - 1) * o.yaw_range)
    pitch = ((torch.rand(3) * 2 - 1) * o.pitch_range)
    fake = ref.generator(u, yaw, pitch)
    from digan.student.objective import sample_teacher

    _, real = sample_teacher(teacher, torch.randn(3, 16), 1.0)
    real = F.interpolate(real, size=(32, 32), mode="bilinear", align_corners=False, antialias=True) if real.shape[-1] != 32 else real
    D = ref.discriminator
    lr, sr, _ = D(real.clamp(-1, 1))
    lf, sf, qf = D(fake.detach())
    loss_d = (F.softplus(-lr).mean() + F.softplus(lf).mean() + sum(F.softplus(-a).mean() + F.softplus(c).mean() for a, c in zip(sr, sf))
              + o.lambda_latent * (qf - u).pow(2).mean())
    want_d = torch.autograd.grad(loss_d, list(D.parameters()))
    frozen = copy.deepcopy(D).requires_grad_(False)  # a separate frozen opponent
    frozen.training = D.training
    for m in frozen.modules():
        m.training = False  # no power-iteration update in the frozen copy (the objective's frozen pass makes none)
    lg, sg, qg = frozen(fake)
    loss_g = F.softplus(-lg).mean() + sum(F.softplus(-a).mean() for a in sg) + o.lambda_latent * (qg - u).pow(2).mean()
    want_g = torch.autograd.grad(loss_g, list(ref.generator.parameters()))
    for a, b in zip(got_d, want_d):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(got_g, want_g):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert float(logs["total"]) == pytest.approx(float((loss_d + loss_g).detach()), rel=1e-5)


def test_training_on_the_synthetic_set_resumes_bit_exactly(tmp_path, synth_set, teacher_file):
    from digan.student.config import make_config
    from digan.student.train import train
    from digan.utils.io import load_torch

    for data in (str(synth_set), "teacher"):  # the folder's image order and the teacher samples both resume exactly
        sets = ["train.batch=2", "train.steps=2", "train.log_every=1", "model.options.z_dim=16", f"model.options.data={data}",
                "train.grid_every=100", "train.ckpt_every=100"]
        cfg = make_config("tiny", model="hologan", overrides=sets)
        assert cfg.model.options["size"] == 32 and cfg.train.betas == (0.5, 0.999) and cfg.train.weight_decay == 0
        tag = "folder" if data != "teacher" else "teacher"
        res = train(cfg, tmp_path / f"a_{tag}", teacher_path=teacher_file, show_progress=False)
        assert all(math.isfinite(v) for v in res.last_losses.values()) and res.steps == 2
        train(cfg, tmp_path / f"b_{tag}", teacher_path=teacher_file, show_progress=False, max_steps_this_run=1)  # writes a grid at step 1
        train(cfg, tmp_path / f"b_{tag}", teacher_path=teacher_file, show_progress=False)
        a = load_torch(tmp_path / f"a_{tag}" / "student.pt")["state"]
        b = load_torch(tmp_path / f"b_{tag}" / "student.pt")["state"]
        assert int(a["step"]) == 2 and a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{tag}: {k}")
        init = HoloGAN(HoloGANOptions(**cfg.model.options)).state_dict()
        assert any(not torch.equal(init[k], a[k]) for k in init if k != "step")


def test_cli_train_and_method(tmp_path, teacher_file, capsys):
    from digan.cli import main
    from digan.utils.io import read_json
    from evaluate.methods import create_method

    out = tmp_path / "run"
    rc = main(["train", "--model", "hologan", "--preset", "tiny", "--teacher", str(teacher_file), "--out", str(out),
               "--steps", "1", "--set", "model.options.z_dim=16", "--set", "train.batch=2"])
    assert rc == 0, capsys.readouterr().err
    cfg = read_json(out / "config.json")
    assert cfg["model"]["name"] == "hologan" and cfg["model"]["options"]["data"] == "teacher"
    capsys.readouterr()
    rc = main(["train", "--model", "hologan", "--teacher", str(teacher_file), "--out", str(tmp_path / "x"), "--steps", "1",
               "--variant", "no_flip"])
    assert rc == 2 and "hologan has no variant" in capsys.readouterr().err
    rc = main(["train", "--model", "hologan", "--teacher", str(teacher_file), "--out", str(tmp_path / "y"), "--steps", "1",
               "--set", "model.options.bogus=1"])
    assert rc == 2 and "model.options.bogus" in capsys.readouterr().err

    m = create_method(f"hologan:{out}")
    caps = m.capabilities
    assert caps.pose and not caps.light and not caps.depth and caps.image_size == 32
    assert "no depth" in caps.missing_reason("depth") and "no light control" in caps.missing_reason("light")
    z = m.latents(2, seed=4)
    a = m.render(z, yaw=30.0, pitch=5.0)
    assert a.image.shape == (2, 3, 32, 32) and a.depth is None
    torch.testing.assert_close(m.render(m.latents(2, seed=4), yaw=30.0, pitch=5.0).image, a.image)
    mirrored = create_method(f"hologan:{out}", yaw_sign=-1)
    torch.testing.assert_close(mirrored.render(z, yaw=-30.0, pitch=5.0).image, a.image)
    from digan.render.types import Light

    with pytest.raises(DiganError, match="cannot relight"):
        m.render(z, light=Light.make(0.5, 0.5, batch=2))
    with pytest.raises(DiganError, match="hologan needs a checkpoint"):
        create_method("hologan")
    with pytest.raises(DiganError, match="holds a 'hologan' model"):
        create_method(f"liftgan:{out}")
