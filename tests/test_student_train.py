"""G3D assembly, the training loop (loss decreases, resume is exact, wrong teacher/config and NaN
errors), inference loading and mesh export, on a small randomly initialised teacher."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from digan.errors import DiganError, NonFiniteLossError
from digan.render.types import Light
from digan.student.build import build_g3d
from digan.student.config import VARIANTS, make_config
from digan.student.export import export_mesh, mesh_from_depth
from digan.student.inference import Student
from digan.student.losses import photometric_loss
from digan.student.model import G3D, make_renderer
from digan.student.objective import sample_teacher
from digan.student.registry import get_builder
from digan.student.testing import random_teacher
from digan.student.train import train
from digan.utils.io import load_torch

pytestmark = [pytest.mark.filterwarnings("ignore:VGG16 weights not found"), pytest.mark.filterwarnings("ignore:no torch face recogniser")]


@pytest.fixture(scope="module")
def teacher():
    return random_teacher(size=32, style_dim=32, width=16, seed=0)


def _cfg(*extra):
    return make_config("tiny", overrides=["train.w_stats_samples=512", "train.batch=4", "train.log_every=1", "train.threads=1", *extra])


def test_g3d_estimate_shapes_ranges_and_postprocessing(teacher):
    cfg = _cfg()
    g3d = build_g3d(cfg, teacher)
    w, _ = sample_teacher(teacher, torch.randn(3, 32), 0.7)
    est = g3d.estimate(w, teacher)
    S = 32
    assert est.depth.shape == (3, 1, S, S) and est.albedo.shape == (3, 3, S, S) and est.transform_map.shape == (3, 1, S, S)
    assert est.depth.min() >= 0.9 - 1e-6 and est.depth.max() <= 1.1 + 1e-6
    torch.testing.assert_close(est.depth[..., :2], torch.full_like(est.depth[..., :2], 1.05))
    torch.testing.assert_close(est.depth[..., -2:], torch.full_like(est.depth[..., -2:], 1.05))
    t = est.transform_map
    assert t.min() >= 0 and t.max() <= 1 + 1e-6
    assert t[..., 0, :].abs().max() == 0 and t[..., :, :2].abs().max() == 0  # zero outermost border
    assert est.view.rotation.abs().max() <= 60 and est.view.translation[:, :2].abs().max() <= 0.1
    assert est.light.ambient.min() >= 0 and est.light.ambient.max() <= 1
    # de-lighting: albedo * frontal shading reproduces the canonical image G(w0)
    from digan.render.shading import normals_from_depth

    n = normals_from_depth(est.depth, cfg.renderer.fov)
    shading = est.light.ambient.view(-1, 1, 1, 1) + est.light.diffuse.view(-1, 1, 1, 1) * n[:, 2:3].clamp(min=0)
    torch.testing.assert_close((est.albedo / 2 + 0.5) * shading * 2 - 1, est.canonical, atol=1e-4, rtol=1e-4)


def test_depth_post_processing_direct(teacher):
    raw = torch.randn(2, 1, 32, 32)
    # without the low-pass (paper / LiftedGAN): tanh(raw - mean + prior) mapped to [0.9, 1.1]
    g3d = build_g3d(_cfg("model.depth_smooth=0"), teacher, w_stats=False)
    d = g3d.depth_from_raw(raw)
    ref = torch.tanh(raw - raw.mean(dim=(2, 3), keepdim=True) + g3d.prior) * 0.1 + 1.0
    torch.testing.assert_close(d[..., 2:-2], ref[..., 2:-2])
    assert torch.all(d[..., :2] == 1.05) and torch.all(d[..., -2:] == 1.05)
    # with model.depth_smooth=2 (px at 64 -> sigma 1 px at 32): the residual is blurred by a
    # separable Gaussian (radius 3, replicate padding) before the prior; computed here directly
    g3d = build_g3d(_cfg("model.depth_smooth=2"), teacher, w_stats=False)
    d = g3d.depth_from_raw(raw)
    x = np.arange(-3, 4, dtype=np.float64)
    k1 = np.exp(-x**2 / 2.0)
    k1 /= k1.sum()
    r = (raw - raw.mean(dim=(2, 3), keepdim=True)).double().numpy()
    rp = np.pad(r, ((0, 0), (0, 0), (3, 3), (3, 3)), mode="edge")
    blurred = np.zeros_like(r)
    for i in range(7):
        for j in range(7):
            blurred += k1[i] * k1[j] * rp[:, :, i:i + 32, j:j + 32]
    ref = torch.tanh(torch.from_numpy(blurred).float() + g3d.prior) * 0.1 + 1.0
    torch.testing.assert_close(d[..., 2:-2], ref[..., 2:-2], atol=1e-5, rtol=0)


def test_symmetric_depth_is_the_mirror_average_of_the_residual(teacher):
    """model.depth_symmetric: the depth is exactly mirror-symmetric, equal to the plain mapping of
    the residual averaged with its mirror image; a symmetric residual is left as it was."""
    raw = torch.randn(2, 1, 32, 32)
    plain = build_g3d(_cfg("model.depth_smooth=0"), teacher, w_stats=False)
    sym = build_g3d(_cfg("model.depth_smooth=0", "model.depth_symmetric=true"), teacher, w_stats=False)
    d = sym.depth_from_raw(raw)
    torch.testing.assert_close(d, d.flip(3), atol=0, rtol=0)
    assert not torch.allclose(plain.depth_from_raw(raw), plain.depth_from_raw(raw).flip(3))
    torch.testing.assert_close(d, plain.depth_from_raw((raw + raw.flip(3)) / 2))
    s = raw + raw.flip(3)
    torch.testing.assert_close(sym.depth_from_raw(s), plain.depth_from_raw(s))
    smooth = build_g3d(_cfg("model.depth_symmetric=true"), teacher, w_stats=False).depth_from_raw(raw)
    torch.testing.assert_close(smooth, smooth.flip(3), atol=1e-6, rtol=0)


def _landmark_run(teacher, *overrides):
    """The objective with every image term off, on 4 inverted codes with one set of 5 keypoints and
    a depth net nudged off zero (so the render carries the points somewhere); one forward at
    seed 0. Returns (cfg, g3d, total, logs, the estimate of the codes the forward picked, kps)."""
    off = [f"loss.{k}=0" for k in ("rec", "flip", "perturb", "cycle", "identity", "w_reg", "albedo", "canonical_symmetry")]
    cfg = _cfg(*overrides, "train.inverted_fraction=1.0", *off)
    b = get_builder("digan")(cfg, teacher)
    g3d, obj = b.core, b.objective
    bank = sample_teacher(teacher, torch.randn(4, 32, generator=torch.Generator().manual_seed(5)), cfg.model.truncation)[0]
    s = teacher.size
    kp = torch.tensor([[s * 0.3, s * 0.4], [s * 0.7, s * 0.4], [s * 0.62, s * 0.58], [s * 0.35, s * 0.75], [s * 0.65, s * 0.75]])
    obj.code_bank, obj.code_kps = bank, kp.expand(4, 5, 2).clone()
    with torch.no_grad():
        for p in g3d.depth_net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.manual_seed(0)
    total, logs = obj(torch.randn(4, 32))
    torch.manual_seed(0)
    torch.randn(4, 32)  # the objective's draws: z, then the codes' pick
    pick = torch.randint(4, (4,))
    return cfg, g3d, total, logs, g3d.estimate(bank[pick], teacher), kp.expand(4, 5, 2)


def test_landmark_parallax_shared_trains_the_shared_map_alone(teacher, tmp_path):
    """loss.landmark_parallax_shared: with every other term off, the objective is the landmark
    loss of the render whose depth is the plain mapping of DS's held output plus the shared map,
    and its gradient reaches the shared map alone (not DS, M, DV, DL or the T map). Without
    model.shared_relief training stops before it starts, in one line."""
    from digan.student.losses import landmark_parallax_loss

    cfg, g3d, total, logs, est, kps = _landmark_run(teacher, "model.shared_relief=true", "loss.landmark_parallax_shared=3")
    assert est.depth_raw is not None and est.depth_raw.shape == est.depth.shape
    # the estimate's depth is the map's mapping of DS's raw output
    torch.testing.assert_close(est.depth, g3d.depth_from_raw(est.depth_raw))
    out = g3d.render(est, make_renderer(cfg, teacher.size))
    ref = 3 * landmark_parallax_loss(out.grid, out.mask, kps)
    assert ref.item() > 0 and total.item() == pytest.approx(ref.item(), rel=1e-4)
    assert logs["landmark_parallax_shared"].item() == pytest.approx(ref.item() / 3, rel=1e-4)
    assert "landmark_parallax" not in logs
    g3d.zero_grad()
    total.backward()
    grads = {n: p.grad for n, p in g3d.named_parameters()}
    assert grads["depth_net.shared_relief"] is not None and grads["depth_net.shared_relief"].abs().sum() > 0
    assert all(g is None or g.abs().sum() == 0 for n, g in grads.items() if n != "depth_net.shared_relief")
    with pytest.raises(DiganError, match="model.shared_relief=true"):
        train(_cfg("loss.landmark_parallax_shared=1", "train.steps=1"), tmp_path / "bad", teacher=teacher, show_progress=False)
    assert not (tmp_path / "bad").exists()


def test_shared_relief_is_one_symmetric_map_added_to_every_faces_residual(teacher):
    """model.shared_relief: off, the depth net has no map; on, the map starts at 0 (the depth is
    the plain one) and, once set, the depth is the plain mapping of raw + the map's mirror average,
    the same map for every face of a batch."""
    raw = torch.randn(3, 1, 32, 32)
    plain = build_g3d(_cfg(), teacher, w_stats=False)
    assert not hasattr(plain.depth_net, "shared_relief")
    assert not any("shared_relief" in k for k in plain.state_dict())
    g = build_g3d(_cfg("model.shared_relief=true"), teacher, w_stats=False)
    g.load_state_dict(plain.state_dict(), strict=False)
    assert "depth_net.shared_relief" in dict(g.named_parameters())
    torch.testing.assert_close(g.depth_from_raw(raw), plain.depth_from_raw(raw), atol=0, rtol=0)
    m = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        g.depth_net.shared_relief.copy_(m)
    sym = (m + m.flip(3)) / 2
    torch.testing.assert_close(g.depth_from_raw(raw), plain.depth_from_raw(raw + sym))
    assert not torch.allclose(g.depth_from_raw(raw), plain.depth_from_raw(raw + m))
    # a symmetric map on a zero residual: a symmetric depth, different from the prior's
    d0 = g.depth_from_raw(torch.zeros(2, 1, 32, 32))
    torch.testing.assert_close(d0, d0.flip(3), atol=1e-6, rtol=0)
    assert (d0 - plain.depth_from_raw(torch.zeros(2, 1, 32, 32))).abs().max() > 1e-3


def test_shared_relief_smooth_gives_the_map_its_own_low_pass(teacher, tmp_path):
    """model.shared_relief_smooth: None = the map is low-passed with DS's residual (above); a
    sigma = the map, its mean removed, gets its own Gaussian and is added beside the prior after
    DS's low-pass. A one-pixel spike of the map stays one pixel wide at sigma 0 and spreads at
    sigma 2, while DS's residual keeps model.depth_smooth either way."""
    from digan.student.model import raw_to_depth

    raw = torch.randn(2, 1, 32, 32)
    spike = torch.zeros(1, 1, 32, 32)
    spike[..., 16, 15] = spike[..., 16, 16] = 1.0  # symmetric under the left-right flip
    depth = {}
    for smooth in ("null", "0", "2"):
        g = build_g3d(_cfg("model.shared_relief=true", f"model.shared_relief_smooth={smooth}"), teacher, w_stats=False)
        with torch.no_grad():
            g.depth_net.shared_relief.copy_(spike)
        depth[smooth] = g.depth_from_raw(raw)
        zero = g.depth_from_raw(torch.zeros(1, 1, 32, 32))
        base = raw_to_depth(torch.zeros(1, 1, 32, 32), g.prior, g.cfg.model)
        changed = ((zero - base).abs() > 1e-6).sum().item()
        if smooth == "0":  # no low-pass: the spike moves its two pixels (the mean shift moves all a little)
            torch.testing.assert_close(depth[smooth], raw_to_depth(raw, g.prior + spike - spike.mean(), g.cfg.model))
            assert ((zero - base).abs() > 1e-3).sum().item() == 2
        else:
            assert ((zero - base).abs() > 1e-3).sum().item() > 6, smooth
        assert changed > 2
    # the map's own sigma differs from DS's path: the three depths differ
    assert not torch.allclose(depth["null"], depth["0"]) and not torch.allclose(depth["0"], depth["2"])
    with pytest.raises(DiganError, match="shared_relief_smooth"):
        train(_cfg("model.shared_relief=true", "model.shared_relief_smooth=-1", "train.steps=1"), tmp_path / "bad", teacher=teacher,
              show_progress=False)
    assert not (tmp_path / "bad").exists()


def test_shared_relief_trains_at_its_own_rate_is_held_in_warmup_and_saved(teacher, tmp_path):
    """train.shared_relief_lr_scale: Adam's first step moves the map by lr * depth_lr_scale *
    shared_relief_lr_scale where its gradient is not tiny, the rest of the depth net by
    lr * depth_lr_scale; the depth warm-up holds it; the trained map is in student.pt."""
    from digan.student.train import _param_groups

    lr = 1e-3
    cfg = _cfg("loss.identity=0", "model.shared_relief=true", "train.shared_relief_lr_scale=7",
               "train.depth_lr_scale=0.5", f"train.lr={lr}", "train.weight_decay=0")
    torch.manual_seed(0)
    b = get_builder("digan")(cfg, teacher)
    groups = _param_groups(b.core, cfg)
    assert sorted(g["lr_scale"] for g in groups) == [0.5, 1.0, 3.5]
    opt = torch.optim.Adam(groups, lr=lr, weight_decay=0)
    before = {n: p.detach().clone() for n, p in b.core.named_parameters()}
    torch.manual_seed(3)
    b.objective(torch.randn(3, 32))[0].backward()
    grads = {n: p.grad.detach().clone() for n, p in b.core.named_parameters() if p.grad is not None}
    assert "depth_net.shared_relief" in grads
    opt.step()
    checked = set()
    for n, p in b.core.named_parameters():
        big = grads[n].abs() > 1e-4 if n in grads else None
        if big is None or not big.any():
            continue
        want = lr * (3.5 if n == "depth_net.shared_relief" else 0.5 if n.startswith("depth_net.") else 1.0)
        step = (p.detach() - before[n]).abs()[big]
        torch.testing.assert_close(step, torch.full_like(step, want), rtol=1e-3, atol=1e-9, msg=n)
        checked.add(n if n == "depth_net.shared_relief" else n.split(".")[0])
    assert {"depth_net.shared_relief", "depth_net", "view_net"} <= checked
    # scales at 1: one group, the map in it (as any depth parameter)
    one = _cfg("model.shared_relief=true")
    assert len(_param_groups(get_builder("digan")(one, teacher).core, one)) == 1

    base = ("loss.identity=0", "model.shared_relief=true", "train.shared_relief_lr_scale=10", "train.steps=2",
            "train.ckpt_every=2", "train.grid_every=100")
    train(_cfg(*base, "train.depth_warmup=2"), tmp_path / "held", teacher=teacher, show_progress=False)
    held = Student.load(tmp_path / "held" / "student.pt", teacher=teacher).g3d.depth_net.shared_relief
    assert torch.count_nonzero(held) == 0
    train(_cfg(*base, "train.depth_warmup=0"), tmp_path / "free", teacher=teacher, show_progress=False)
    free = Student.load(tmp_path / "free" / "student.pt", teacher=teacher)
    assert free.cfg.model.shared_relief and free.g3d.depth_net.shared_relief.abs().max() > 1e-3
    with pytest.raises(DiganError, match="shared_relief_lr_scale"):
        train(_cfg(*base, "train.shared_relief_lr_scale=-1"), tmp_path / "bad", teacher=teacher, show_progress=False)


def test_variants_table_and_ablation_switches(teacher):
    assert set(VARIANTS) == {"full", "no_flip", "no_identity", "no_albedo", "mlp", "plain_conv", "residual_compose"}
    # residual_compose: M starts as the identity (w0 = w), for LiftGAN too, whose own M is plain
    for model in ("digan", "liftgan"):
        c = make_config("tiny", "residual_compose", ["train.w_stats_samples=256"], model=model)
        g = get_builder(model)(c, teacher).core
        w = torch.randn(3, 32)
        assert c.model.compose_residual and torch.equal(g.neutral_code(w, torch.zeros(3, 4), torch.zeros(3, 6)), w)
    # the tiny preset's residual M is LiftGAN's too (its plain M collapsed at that budget); the
    # paper preset keeps LiftedGAN's plain M
    assert make_config("tiny", model="liftgan").model.compose_residual
    assert not make_config("paper", model="liftgan").model.compose_residual
    cfg = _cfg()
    b = get_builder("digan")(make_config("tiny", "no_flip", ["train.w_stats_samples=256"]), teacher)
    _, logs = b.objective(torch.randn(2, 32))
    assert "flip" not in logs and "albedo" in logs
    b = get_builder("digan")(make_config("tiny", "no_albedo", ["train.w_stats_samples=256"]), teacher)
    _, logs = b.objective(torch.randn(2, 32))
    assert "albedo" not in logs and "flip" in logs
    g = build_g3d(make_config("tiny", "mlp", ["train.w_stats_samples=256"]), teacher)
    assert not any(type(m).__name__ == "KANLinear" for m in g.modules())
    g = build_g3d(make_config("tiny", "plain_conv", ["train.w_stats_samples=256"]), teacher)
    assert not any(type(m).__name__ == "PartialConv2d" for m in g.modules())
    assert cfg.variant == "full"
    with pytest.raises(DiganError, match="unknown DIGAN variant"):
        make_config("tiny", "nope")


def test_objective_total_is_weighted_sum(teacher):
    cfg = _cfg("loss.identity=0")
    b = get_builder("digan")(cfg, teacher)
    torch.manual_seed(3)
    total, logs = b.objective(torch.randn(3, 32))
    lc = cfg.loss
    assert lc.canonical_symmetry > 0  # the tiny preset's schedule
    expect = lc.rec * (logs["rec"] + lc.flip * logs["flip"]) + lc.perturb * logs["perturb"] + lc.cycle * logs["cycle"] \
        + lc.w_reg * logs["w_reg"] + lc.albedo * logs["albedo"] + lc.canonical_symmetry * logs["canonical_symmetry"]
    assert total.item() == pytest.approx(expect.item(), rel=1e-5)
    total.backward()
    g3d = b.core
    for name in ("view_net", "light_net", "compose", "depth_net", "trans_net"):
        grads = [p.grad for p in getattr(g3d, name).parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name


def test_rec_depth_grad_none_keeps_single_view_terms_off_the_depth(teacher):
    """loss.rec_depth_grad=none: rec and flip still train DL (and M) but send nothing to DS;
    the same loss values as "all" (only the gradient path differs); perturb still reaches DS."""
    only_rec = ["loss.identity=0", "loss.perturb=0", "loss.cycle=0", "loss.w_reg=0", "loss.albedo=0", "loss.canonical_symmetry=0"]
    for mode, depth_grad in (("all", True), ("none", False)):
        torch.manual_seed(0)
        b = get_builder("digan")(_cfg(*only_rec, f"loss.rec_depth_grad={mode}"), teacher)
        torch.manual_seed(3)
        total, logs = b.objective(torch.randn(3, 32))
        total.backward()
        dg = [p.grad for p in b.core.depth_net.parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in dg) == depth_grad, mode
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in b.core.light_net.parameters()), mode
        if mode == "all":
            ref = {k: v.item() for k, v in logs.items()}
        else:
            assert {k: v.item() for k, v in logs.items()} == pytest.approx(ref, rel=1e-5)
    b = get_builder("digan")(_cfg("loss.identity=0", "loss.rec_depth_grad=none"), teacher)
    b.objective(torch.randn(3, 32))[0].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in b.core.depth_net.parameters())


def test_flip_depth_grad_none_keeps_only_the_mirror_term_off_the_depth(teacher):
    """loss.flip_depth_grad=none: the depth net gets exactly rec's gradient (as with loss.flip=0),
    the loss values are those of "all", and flip still trains DL."""
    only_rec = ["loss.identity=0", "loss.perturb=0", "loss.cycle=0", "loss.w_reg=0", "loss.albedo=0", "loss.canonical_symmetry=0"]

    def grads(*extra):
        torch.manual_seed(0)
        b = get_builder("digan")(_cfg(*only_rec, *extra), teacher)
        for p in b.core.depth_net.parameters():  # a non-flat depth, so both terms reach it
            torch.nn.init.normal_(p, std=0.05)
        torch.manual_seed(3)
        total, logs = b.objective(torch.randn(3, 32))
        total.backward()
        flat = lambda net: torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in net.parameters()])
        return flat(b.core.depth_net), flat(b.core.light_net), {k: v.item() for k, v in logs.items()}

    d_all, l_all, logs_all = grads("loss.flip_depth_grad=all")
    d_none, l_none, logs_none = grads("loss.flip_depth_grad=none")
    d_noflip, l_noflip, _ = grads("loss.flip=0")
    assert logs_none == pytest.approx(logs_all, rel=1e-5)
    assert d_none.abs().sum() > 0
    torch.testing.assert_close(d_none, d_noflip, rtol=1e-4, atol=1e-9)
    assert (d_all - d_none).abs().sum() > 1e-3 * d_all.abs().sum()  # flip did reach the depth
    assert (l_none - l_noflip).abs().sum() > 1e-3 * l_noflip.abs().sum()  # and still trains DL


def test_canonical_cycle_term(teacher):
    """loss.canonical_cycle: MSE(DL(w0), (a, b, 0, 0)) + MSE(DV(w0) rotation, 0), off at 0."""
    cfg = _cfg("loss.identity=0", "loss.canonical_cycle=2")
    torch.manual_seed(0)
    b = get_builder("digan")(cfg, teacher)
    torch.manual_seed(3)
    total, logs = b.objective(torch.randn(3, 32), keep=True)
    est, g = b.objective.last["est"], b.core
    with torch.no_grad():
        v0, l0 = g.decompose(est.w0)
        want = ((l0[:, :2] - est.light_raw[:, :2]) ** 2).sum() / 12 + (l0[:, 2:] ** 2).sum() / 12 + (v0[:, :3] ** 2).mean()
    assert logs["canonical_cycle"].item() == pytest.approx(want.item(), rel=1e-5)
    assert "canonical_cycle" not in get_builder("digan")(_cfg("loss.identity=0"), teacher).objective(torch.randn(2, 32))[1]


def test_view_shift_term(teacher):
    """loss.view_shift: mean over the batch of DV's squared raw (tx, ty), added to the total with
    its weight; its gradient reaches DV alone; not computed at 0 (paper default)."""
    on = get_builder("digan")(_cfg("loss.identity=0", "loss.view_shift=3"), teacher).objective
    torch.manual_seed(0)
    off = get_builder("digan")(_cfg("loss.identity=0"), teacher).objective
    off.g3d.load_state_dict(on.g3d.state_dict())
    z = torch.randn(3, 32)
    torch.manual_seed(3)
    total, logs = on(z, keep=True)
    t = on.last["est"].view.translation[:, :2] / 0.1  # raw units: xy_translation_range = 0.1
    assert logs["view_shift"].item() == pytest.approx((t ** 2).sum(1).mean().item(), rel=1e-5)
    assert logs["view_shift"].item() > 0
    torch.manual_seed(3)
    total0, logs0 = off(z)
    assert "view_shift" not in logs0
    assert total.item() == pytest.approx(total0.item() + 3 * logs["view_shift"].item(), rel=1e-5)
    # only DV's weights feel it: the two objectives' gradients (same weights, same draws) differ
    # on DV and nowhere else
    def grads(obj):
        torch.manual_seed(3)
        tot, _ = obj(z)
        params = [*obj.g3d.view_net.parameters(), *obj.g3d.depth_net.parameters()]
        return torch.autograd.grad(tot, params, allow_unused=True)

    n_view = len(list(on.g3d.view_net.parameters()))
    diff = [(a if a is not None else 0) - (b if b is not None else 0) for a, b in zip(grads(on), grads(off))]
    assert max(float(torch.as_tensor(d).abs().max()) for d in diff[:n_view]) > 1e-6
    assert max(float(torch.as_tensor(d).abs().max()) for d in diff[n_view:]) < 1e-6


def test_canonical_symmetry_term_and_perturbation_translation(teacher):
    from digan.student.objective import perturbation

    cfg = _cfg("loss.identity=0", "loss.perc=0", "loss.canonical_symmetry=0.5")
    b = get_builder("digan")(cfg, teacher)
    torch.manual_seed(3)
    total, logs = b.objective(torch.randn(3, 32), keep=True)
    c = b.objective.last["est"].canonical
    assert logs["canonical_symmetry"].item() == pytest.approx((c - c.flip(3)).abs().mean().item(), rel=1e-5)
    lc = cfg.loss
    expect = lc.rec * (logs["rec"] + lc.flip * logs["flip"]) + lc.perturb * logs["perturb"] + lc.cycle * logs["cycle"] \
        + lc.w_reg * logs["w_reg"] + lc.albedo * logs["albedo"] + 0.5 * logs["canonical_symmetry"]
    assert total.item() == pytest.approx(expect.item(), rel=1e-5)
    off = get_builder("digan")(_cfg("loss.identity=0", "loss.canonical_symmetry=0"), teacher).objective
    assert "canonical_symmetry" not in off(torch.randn(2, 32))[1]  # paper default 0: not computed
    # perturbed views: tx = perturb_translation * sin(yaw) raw units (LiftedGAN: 0.2)
    for k in (0.2, 0.0):
        c2 = _cfg(f"loss.perturb_translation={k}")
        _, view, angles = perturbation(torch.zeros(64, 4), torch.zeros(64, 6), c2, torch.Generator().manual_seed(0))
        torch.testing.assert_close(view[:, 3], k * torch.sin(angles[:, 1] * np.pi / 180))
        assert angles[:, 1].abs().max() <= 45 and angles[:, 0].abs().max() <= 15 and view[:, 4:].abs().max() == 0
    # perturbed lights: "permute" (LiftedGAN) reuses the batch's predicted lights; "direction"
    # keeps permuted ambient/diffuse but samples (dx, dy) ~ U(+-range), so a DL that lights every
    # face from one direction still sees relit perturbations
    lights = torch.tensor([[0.1, 0.2, 0.05, -0.14]]).repeat(64, 1)
    lp, _, _ = perturbation(lights, torch.zeros(64, 6), _cfg("loss.perturb_light=permute"), torch.Generator().manual_seed(0))
    torch.testing.assert_close(lp, lights)  # permuting identical lights cannot relight
    lp, _, _ = perturbation(lights, torch.zeros(64, 6), _cfg("loss.perturb_light=direction", "loss.perturb_light_range=0.6"),
                            torch.Generator().manual_seed(0))
    torch.testing.assert_close(lp[:, :2], lights[:, :2])
    assert lp[:, 2:].abs().max() <= 0.6 and lp[:, 2:].std(0).min() > 0.25  # U(-0.6, 0.6): std 0.35


def _eval_rec(core, teacher, cfg, z):
    renderer = make_renderer(cfg, core.size)
    with torch.no_grad():
        w, target = sample_teacher(teacher, z, cfg.model.truncation)
        est = core.estimate(w, teacher)
        return photometric_loss(core.render(est, renderer, filter_grads=False).image, target).item()


def test_code_noise_perturbs_the_codes_the_teacher_draws(teacher):
    """train.code_noise: each sampled code moves by Gaussian noise of that many w_std per
    dimension (after the truncation), and the target is the teacher's image of the moved code."""
    from digan.student.model import teacher_synthesis

    z = torch.randn(1000, int(teacher.style_dim), generator=torch.Generator().manual_seed(0))
    w0, _ = sample_teacher(teacher, z, 0.7)
    std = torch.linspace(0.5, 2.0, int(teacher.style_dim))
    torch.manual_seed(1)
    w1, img = sample_teacher(teacher, z, 0.7, code_noise=0.3, w_std=std)
    ratio = (w1 - w0).std(0) / std
    torch.testing.assert_close(ratio, torch.full_like(ratio, 0.3), atol=0.03, rtol=0)
    assert (w1 - w0).mean(0).abs().max() < 0.1
    torch.testing.assert_close(img[:3], teacher_synthesis(teacher, w1[:3], features=False)[0].clamp(-1, 1))
    torch.testing.assert_close(sample_teacher(teacher, z[:3], 0.7, code_noise=0.0)[0], w0[:3])
    # the objective samples its codes with it (and with the student's own w_std)
    b = get_builder("digan")(_cfg("train.code_noise=0.5", "loss.identity=0"), teacher)
    seen = []
    import digan.student.objective as O

    orig = O.sample_teacher
    try:
        O.sample_teacher = lambda t, zz, psi, noise=0.0, ws=None: seen.append((noise, ws)) or orig(t, zz, psi, noise, ws)
        b.objective(torch.randn(2, 32))
    finally:
        O.sample_teacher = orig
    assert seen[0][0] == 0.5 and seen[0][1] is b.core.w_std


def test_inverted_code_bank_feeds_part_of_each_batch(teacher, tmp_path):
    """train.inverted_data: the first inverted_n images of the folder are inverted once (the same
    codes invert_teacher gives), cached in the run folder (reused, rebuilt when a setting
    changes), and each batch's first round(fraction * batch) codes come from the bank, with the
    teacher's images of those codes as targets; a missing folder is a one-line error."""
    from PIL import Image

    from digan.student.method import invert_teacher
    from digan.student.model import teacher_synthesis
    from digan.student.train import inverted_code_bank
    from digan.teacher.data import ImageFolderData

    imgs = tmp_path / "real" / "images"
    imgs.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(imgs / f"{i:03d}.png")
    cfg = _cfg(f"train.inverted_data={tmp_path / 'real'}", "train.inverted_n=3", "train.inverted_steps=2",
               "train.inverted_fraction=0.5", "loss.identity=0")
    b = get_builder("digan")(cfg, teacher)
    bank = inverted_code_bank(cfg, teacher, b.core.w_std, tmp_path / "run", "cpu")
    ref = invert_teacher(teacher, ImageFolderData(imgs, mirror=False, cache_gb=0).load([0, 1, 2]), b.core.w_std, 2)
    torch.testing.assert_close(bank, ref)
    assert (tmp_path / "run" / "inverted_codes.pt").is_file()
    torch.testing.assert_close(inverted_code_bank(cfg, teacher, b.core.w_std, tmp_path / "run", "cpu"), bank)  # cached
    (tmp_path / "run" / "inverted_codes.pt").write_bytes(b"damaged")  # a damaged cache is made again, not an error
    torch.testing.assert_close(inverted_code_bank(cfg, teacher, b.core.w_std, tmp_path / "run", "cpu"), bank)
    assert load_torch(tmp_path / "run" / "inverted_codes.pt")["codes"].shape == bank.shape
    more = make_config("tiny", overrides=["train.w_stats_samples=512", f"train.inverted_data={imgs}", "train.inverted_n=4",
                                          "train.inverted_steps=2"])
    assert inverted_code_bank(more, teacher, b.core.w_std, tmp_path / "run", "cpu").shape[0] == 4  # rebuilt
    b.objective.code_bank = bank
    b.objective(torch.randn(4, 32), keep=True)
    tgt = b.objective.last["target"]
    imgs_bank = teacher_synthesis(teacher, bank, features=False)[0].clamp(-1, 1)
    for i in range(2):  # round(0.5 * 4) codes from the bank, their teacher images as targets
        assert min(float((tgt[i] - im).abs().max()) for im in imgs_bank) < 1e-5
    for i in range(2, 4):
        assert min(float((tgt[i] - im).abs().max()) for im in imgs_bank) > 1e-3
    bad = _cfg(f"train.inverted_data={tmp_path / 'nowhere'}")
    with pytest.raises(DiganError, match="not a folder of images"):
        inverted_code_bank(bad, teacher, b.core.w_std, tmp_path / "run2", "cpu")


def test_short_training_lowers_reconstruction_and_resume_is_exact(teacher, tmp_path):
    # the paper's loss balance (the tiny preset's schedule trades reconstruction for symmetry early on)
    cfg = _cfg("train.steps=25", "train.lr=1e-3", "train.ckpt_every=20", "train.grid_every=25", "loss.identity=0",
               "loss.flip=0.8", "loss.canonical_symmetry=0", "train.depth_warmup=0", "loss.perturb_light=permute")
    zval = torch.randn(8, 32, generator=torch.Generator().manual_seed(99))
    g0 = get_builder("digan")(cfg, teacher).core
    before = _eval_rec(g0, teacher, cfg, zval)
    r = train(cfg, tmp_path / "a", teacher=teacher, show_progress=False)
    assert r.steps == 25 and (tmp_path / "a" / "student.pt").is_file()
    s = Student.load(tmp_path / "a" / "student.pt", teacher=teacher)
    after = _eval_rec(s.g3d, teacher, cfg, zval)
    assert after < 0.85 * before, (before, after)
    for f in ("config.json", "run.json", "losses.csv", "losses.png", "grids/step_0000025.png"):
        assert (tmp_path / "a" / f).is_file(), f

    # resume: 6 steps in one go == 3 + 3 steps in two calls
    cfg2 = _cfg("train.steps=6", "train.ckpt_every=3", "train.grid_every=100", "loss.identity=0")
    train(cfg2, tmp_path / "b", teacher=teacher, show_progress=False)
    train(cfg2, tmp_path / "c", teacher=teacher, show_progress=False, max_steps_this_run=3)
    assert load_torch(tmp_path / "c" / "checkpoint.pt")["step"] == 3
    assert not (tmp_path / "c" / "student.pt").exists()
    r2 = train(cfg2, tmp_path / "c", teacher=teacher, show_progress=False)
    assert r2.resumed_from == 3 and r2.steps == 6
    sb, sc = load_torch(tmp_path / "b" / "student.pt")["state"], load_torch(tmp_path / "c" / "student.pt")["state"]
    for k in sb:
        torch.testing.assert_close(sb[k], sc[k], msg=k)
    rows = (tmp_path / "c" / "losses.csv").read_text().strip().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == [1, 2, 3, 4, 5, 6]

    # wrong teacher / wrong config -> one-line errors
    other = random_teacher(size=32, style_dim=32, width=16, seed=1)
    with pytest.raises(DiganError, match="different teacher"):
        train(cfg2, tmp_path / "c", teacher=other, show_progress=False)
    with pytest.raises(DiganError, match="different config"):
        train(_cfg("train.steps=6", "loss.flip=0.5", "loss.identity=0"), tmp_path / "c", teacher=teacher, show_progress=False)
    # changing only the number of steps resumes
    r3 = train(_cfg("train.steps=7", "train.ckpt_every=3", "train.grid_every=100", "loss.identity=0"), tmp_path / "c", teacher=teacher, show_progress=False)
    assert r3.resumed_from == 6 and r3.steps == 7
    with pytest.raises(DiganError, match="not the one"):
        Student.load(tmp_path / "c" / "student.pt", teacher=other)


def test_nan_loss_keeps_last_good_checkpoint(teacher, tmp_path, monkeypatch):
    cfg = _cfg("train.steps=4", "train.ckpt_every=2", "train.grid_every=100", "loss.identity=0")
    train(cfg, tmp_path / "n", teacher=teacher, show_progress=False, max_steps_this_run=2)
    from digan.student import objective as O

    orig = O.DistillationObjective.forward

    def bad(self, z, keep=False):
        total, logs = orig(self, z, keep)
        return total * float("nan"), logs

    monkeypatch.setattr(O.DistillationObjective, "forward", bad)
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        train(cfg, tmp_path / "n", teacher=teacher, show_progress=False)
    assert load_torch(tmp_path / "n" / "checkpoint.pt")["step"] == 2


def test_nan_loss_keeps_the_loss_rows_logged_before_it(teacher, tmp_path, monkeypatch):
    """The rows logged after the last checkpoint, up to the divergence, are in losses.csv (they
    were lost before); a resume from the checkpoint keeps only the rows up to it."""
    cfg = _cfg("train.steps=6", "train.ckpt_every=3", "train.log_every=1", "train.grid_every=100", "loss.identity=0")
    from digan.student import objective as O

    orig = O.DistillationObjective.forward
    calls = [0]

    def nan_at_step_6(self, z, keep=False):
        total, logs = orig(self, z, keep)
        calls[0] += 1
        return (total * float("nan") if calls[0] == 6 else total), logs

    monkeypatch.setattr(O.DistillationObjective, "forward", nan_at_step_6)
    with pytest.raises(NonFiniteLossError, match="step 6"):
        train(cfg, tmp_path / "n", teacher=teacher, show_progress=False)
    steps = [int(r["step"]) for r in csv.DictReader(open(tmp_path / "n" / "losses.csv"))]
    assert steps == [1, 2, 3, 4, 5] and load_torch(tmp_path / "n" / "checkpoint.pt")["step"] == 3
    monkeypatch.setattr(O.DistillationObjective, "forward", orig)
    train(cfg, tmp_path / "n", teacher=teacher, show_progress=False)
    steps = [int(r["step"]) for r in csv.DictReader(open(tmp_path / "n" / "losses.csv"))]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_student_render_light_and_view(teacher, tmp_path):
    cfg = _cfg("train.steps=1", "loss.identity=0")
    train(cfg, tmp_path / "s", teacher=teacher, show_progress=False)
    s = Student.load(tmp_path / "s" / "student.pt", teacher=teacher)
    est = s.estimate(s.style(s.latents(2, seed=5)))
    # ambient-only light reproduces the albedo in the canonical (frontal) view on the foreground
    out = s.render(est, yaw=0.0, pitch=0.0, light=Light.make(1.0, 0.0, batch=2))
    fg = (out.mask > 0) & (s.g3d.foreground(est.depth) > 0)
    fg = fg.expand(-1, 3, -1, -1)
    assert fg.sum() > 0
    torch.testing.assert_close(out.image[fg], est.albedo.clamp(-1e9, 1e9)[fg], atol=2e-3, rtol=0)
    # latents are a pure function of (seed, index)
    torch.testing.assert_close(s.latents(2, seed=5, start=1)[0], s.latents(3, seed=5)[1])


def test_mesh_export_roundtrip_counts(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    S = 12
    depth = torch.full((1, S, S), 1.05)
    depth[:, 3:9, 2:10] = 1.0  # a 6 x 8 foreground block
    albedo = torch.rand(3, S, S) * 2 - 1
    fg = (depth[0] <= 1.04).float()
    mesh = mesh_from_depth(depth, albedo, mask=fg)
    assert len(mesh.vertices) == 6 * 8 and len(mesh.faces) == 2 * 5 * 7
    paths = export_mesh(tmp_path / "face", depth, albedo, ("obj", "ply", "glb"), mask=fg)
    names = sorted(p.name for p in paths)
    assert names == ["face.glb", "face.mtl", "face.obj", "face.ply", "face.png"]
    for ext in ("obj", "ply", "glb"):
        m = trimesh.load(tmp_path / f"face.{ext}", process=False, force="mesh")
        assert len(m.vertices) == 48 and len(m.faces) == 70, ext
    m = trimesh.load(tmp_path / "face.obj", process=False, force="mesh")
    # front faces point toward the viewer (+z) and the texture came along
    assert (m.face_normals[:, 2] > 0.99).all()
    assert m.visual.uv.shape == (48, 2)
    np.testing.assert_allclose(m.vertices[:, 2].mean(), 0.0, atol=1e-5)  # depth 1.0 -> z = 0
    with pytest.raises(DiganError, match="unknown mesh format"):
        export_mesh(tmp_path / "x", depth, albedo, ("stl",))


def test_init_from_copies_weights_and_rejects_other_shapes(teacher, tmp_path):
    from digan.student.train import init_weights

    cfg = _cfg("train.steps=1", "loss.identity=0")
    train(cfg, tmp_path / "s", teacher=teacher, show_progress=False)
    src = load_torch(tmp_path / "s" / "student.pt")["state"]
    g = build_g3d(cfg, teacher)
    w_mean = g.w_mean.clone()
    init_weights(g, tmp_path / "s" / "student.pt")
    own = g.state_dict()
    for k, v in src.items():
        if not k.endswith(("w_mean", "w_std", "w_sigma_inv")):
            torch.testing.assert_close(own[k], v, msg=k)
    torch.testing.assert_close(g.w_mean, w_mean)  # teacher statistics stay the new teacher's
    other = build_g3d(make_config("paper", overrides=["train.w_stats_samples=64"]), teacher)
    with pytest.raises(DiganError, match="does not fit"):
        init_weights(other, tmp_path / "s" / "student.pt")


def test_convex_depth_prior_closed_form_and_untrained_depth_equals_it(teacher):
    S = 32
    p = build_g3d(_cfg(), teacher, w_stats=False).depth_prior("ellipsoid", S, 0.96, 1.05, (0.5, 0.75))
    c = (np.arange(S) + 0.5) / S * 2 - 1
    yy, xx = np.meshgrid(c, c, indexing="ij")
    cap = np.sqrt(np.clip(1 - (xx / 0.5) ** 2 - (yy / 0.75) ** 2, 0, None))
    ref = 1.05 - 0.09 * cap  # depth: 0.96 at the centre, 1.05 on and outside the ellipse
    np.testing.assert_allclose(np.tanh(p[0, 0].double().numpy()) * 0.1 + 1.0, ref, atol=1e-6)
    assert torch.count_nonzero(build_g3d(_cfg("model.depth_prior=none"), teacher, w_stats=False).prior) == 0
    # the zero-initialised depth net starts exactly at the prior (border columns aside): the
    # centre in front of the 1.0 pivot, the outline behind it
    g3d = build_g3d(_cfg(), teacher)
    w, _ = sample_teacher(teacher, torch.randn(2, 32), 0.7)
    est = g3d.estimate(w, teacher)
    np.testing.assert_allclose(est.depth[:, 0, :, 2:-2].detach().double().numpy(), np.broadcast_to(ref[:, 2:-2], (2, S, S - 4)), atol=1e-5)
    d = est.depth[0, 0]
    assert d[16, 16] < 1.0 < d[16, 8] and d[16, 16] < d[16, 12] < d[16, 8]
    with pytest.raises(DiganError, match="depth_prior"):
        build_g3d(_cfg("model.depth_prior=sphere"), teacher, w_stats=False)


def test_smoothed_depth_prior_is_the_sharp_prior_low_passed_and_loses_its_rim_kink(teacher):
    S, sigma64 = 32, 2.0
    sharp = G3D.depth_prior("ellipsoid", S, 0.96, 1.05, (0.5, 0.75))[0, 0].double().numpy()
    smooth = build_g3d(_cfg(f"model.depth_prior_smooth={sigma64}"), teacher, w_stats=False).prior[0, 0].double().numpy()
    # independent reference: a separable Gaussian (sigma scaled to the size, radius ceil(3 sigma),
    # normalised taps) with edge replication, in tanh units
    sig = sigma64 * S / 64
    r = int(np.ceil(3 * sig))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sig) ** 2)
    k /= k.sum()
    pad = np.pad(sharp, r, mode="edge")
    rows = np.stack([np.convolve(row, k, mode="valid") for row in pad])
    ref = np.stack([np.convolve(col, k, mode="valid") for col in rows.T]).T
    np.testing.assert_allclose(smooth, ref, atol=1e-5)
    # the sharp cap meets its rim with a vertical tangent; the smoothed one does not, and its
    # apex and its backdrop stay close to the sharp prior's
    def depth(p):
        return np.tanh(p) * 0.1 + 1.0
    col_sharp, col_smooth = depth(sharp[:, S // 2]), depth(smooth[:, S // 2])
    # the kink: the largest change of slope between neighbouring pixels down the centre column
    assert np.abs(np.diff(col_smooth, 2)).max() < 0.4 * np.abs(np.diff(col_sharp, 2)).max()
    assert abs(col_smooth[S // 2] - col_sharp[S // 2]) < 0.01 and abs(depth(smooth[0, 0]) - 1.05) < 1e-4
    np.testing.assert_allclose(smooth, smooth[:, ::-1], atol=1e-6)  # still mirror-symmetric
    # 0 (the default) is the sharp prior itself
    np.testing.assert_array_equal(build_g3d(_cfg(), teacher, w_stats=False).prior[0, 0].numpy(), sharp.astype(np.float32))


def test_inference_prior_is_used_by_a_loaded_student_and_never_in_training(teacher, tmp_path):
    from digan.student.diagnostics import TrainingShapeEval, _prior_depth
    from digan.student.model import raw_to_depth

    cfg = _cfg("train.steps=2", "loss.identity=0", "train.depth_warmup=0", "train.ckpt_every=1")
    m = cfg.model
    assert m.inference_prior_smooth == 2.0 and m.depth_prior_smooth == 0  # the tiny preset
    args = (m.depth_prior, 32, m.depth_prior_apex, m.depth_prior_rim, m.depth_prior_extent, (m.min_depth, m.max_depth))
    sharp, soft = G3D.depth_prior(*args), G3D.depth_prior(*args, 2.0)
    assert (sharp - soft).abs().max() > 0.1
    g3d = build_g3d(cfg, teacher)
    torch.testing.assert_close(g3d.prior, sharp, rtol=0, atol=0)  # training adds the residual to the sharp prior
    res = train(cfg, tmp_path / "r", teacher=teacher, show_progress=False)
    s = Student.load(res.out_dir / "student.pt", teacher=teacher)
    g = s.g3d
    torch.testing.assert_close(g.prior, soft, rtol=0, atol=0)
    torch.testing.assert_close(g.training_prior, sharp, rtol=0, atol=0)
    # the estimate is DS's (trained) residual on the softened prior; the reference prior of bench
    # shape stays the sharp one the student was trained on
    w = s.style(s.latents(2, seed=3))
    from digan.student.model import teacher_synthesis

    with torch.no_grad():
        est = s.estimate(w)
        _, feat = teacher_synthesis(teacher, est.w0, features=g.depth_net.inject is not None)
        raw = g.depth_net(est.w0, feat)
    torch.testing.assert_close(est.depth, raw_to_depth(raw, soft, m))
    assert (est.depth - raw_to_depth(raw, sharp, m)).abs().max() > 1e-3
    torch.testing.assert_close(_prior_depth(g, 1), raw_to_depth(torch.zeros_like(sharp), sharp, m))
    g.use_inference_prior(False)
    torch.testing.assert_close(s.estimate(w).depth, raw_to_depth(raw, sharp, m))
    assert g.prior_smooth == 0.0
    # another low-pass at inference (bench shape --prior-smooth, the digan method's option); 0 = sharp
    g.use_inference_prior(True, 3.0)
    torch.testing.assert_close(g.prior, G3D.depth_prior(*args, 3.0), rtol=0, atol=0)
    assert g.prior_smooth == 3.0
    g.use_inference_prior(True, 0)
    torch.testing.assert_close(g.prior, sharp, rtol=0, atol=0)
    with pytest.raises(DiganError, match="inference_prior_smooth"):
        g.use_inference_prior(True, float("nan"))
    g.use_inference_prior()
    torch.testing.assert_close(g.prior, soft, rtol=0, atol=0)
    assert g.prior_smooth == 2.0
    # the shape evaluation during training scores the loaded student's depth and gives the
    # training model its sharp prior back
    t64 = random_teacher(size=64, style_dim=32, width=8, seed=0)  # the synthetic sets start at 64 px
    g3d = build_g3d(cfg, t64)
    sharp64, soft64 = G3D.depth_prior(m.depth_prior, 64, *args[2:]), G3D.depth_prior(m.depth_prior, 64, *args[2:], 2.0)
    seen = []
    real = G3D.estimate_from_w0

    def spy(self, *a, **k):
        seen.append(self.prior.clone())
        return real(self, *a, **k)

    synth = tmp_path / "synth"
    from digan.data.synth import generate_synth

    generate_synth(synth, n=4, size=64, seed=5)
    ev = TrainingShapeEval(tmp_path / "e", synth, g3d, t64, cfg, "cpu", 0, 1, n_faces=3, inversion_steps=1)
    G3D.estimate_from_w0 = spy
    try:
        ev(1)
    finally:
        G3D.estimate_from_w0 = real
    assert seen and all(torch.equal(p, soft64) for p in seen)
    torch.testing.assert_close(g3d.prior, sharp64, rtol=0, atol=0)


def test_depth_warmup_keeps_the_depth_net_fixed_then_trains_it(teacher, tmp_path):
    cfg = _cfg("train.steps=2", "train.depth_warmup=1", "train.ckpt_every=1", "loss.identity=0")
    torch.manual_seed(cfg.train.seed)  # train() seeds the same way before building G3D
    g0 = {k: v.clone() for k, v in build_g3d(cfg, teacher).state_dict().items()}
    train(cfg, tmp_path / "w", teacher=teacher, show_progress=False, max_steps_this_run=1)
    s1 = load_torch(tmp_path / "w" / "checkpoint.pt")["state"]
    depth_keys = [k for k in s1 if k.startswith("depth_net.")]
    other = [k for k in s1 if k.startswith(("view_net.", "compose.")) and s1[k].is_floating_point()]
    assert depth_keys and all(torch.equal(s1[k], g0[k]) for k in depth_keys)
    assert any(not torch.equal(s1[k], g0[k]) for k in other)
    train(cfg, tmp_path / "w", teacher=teacher, show_progress=False)
    s2 = load_torch(tmp_path / "w" / "student.pt")["state"]
    assert any(not torch.equal(s2[k], s1[k]) for k in depth_keys)


def test_lr_decay_linear_closed_form_and_in_training(teacher, tmp_path):
    """train.lr_decay=linear: every learning rate is constant until the depth starts learning,
    then falls linearly (closed form), and the optimizer really runs at it (both Adam groups)."""
    from types import SimpleNamespace

    from digan.student.train import lr_factor

    tc = SimpleNamespace(lr_decay="linear", depth_warmup=900, steps=1200)
    assert [lr_factor(s, tc) for s in (0, 899, 900, 1050, 1199)] == pytest.approx([1, 1, 1, 0.5, 1 / 300])
    assert lr_factor(5000, tc) == pytest.approx(1 / 300)  # past the end (more steps on resume): the floor
    assert lr_factor(1050, SimpleNamespace(lr_decay="none", depth_warmup=900, steps=1200)) == 1.0
    assert lr_factor(1, SimpleNamespace(lr_decay="linear", depth_warmup=0, steps=4)) == pytest.approx(0.75)
    with pytest.raises(DiganError, match="lr_decay"):
        lr_factor(0, SimpleNamespace(lr_decay="cosine", depth_warmup=0, steps=4))
    with pytest.raises(DiganError, match="lr_decay"):
        _cfg("train.lr_decay=cosine")
    base = ["train.steps=4", "train.ckpt_every=1", "train.grid_every=100", "loss.identity=0", "train.depth_warmup=2",
            "train.depth_lr_scale=0.5", "train.lr=2e-4"]
    for mode, want in (("none", 1.0), ("linear", 0.5)):
        out = tmp_path / mode
        train(_cfg(*base, f"train.lr_decay={mode}"), out, teacher=teacher, show_progress=False)
        groups = load_torch(out / "checkpoint.pt")["optimizer"]["param_groups"]
        # the last update (index 3) ran at 2e-4 x its group's scale x (1 - (3 - 2) / 2)
        assert sorted(g["lr"] for g in groups) == pytest.approx([1e-4 * want, 2e-4 * want]), mode


def test_checkpoints_from_before_the_depth_prior_load_without_it(teacher, tmp_path):
    from digan.student.train import load_config_from_checkpoint

    cfg = _cfg("train.steps=1", "loss.identity=0")
    train(cfg, tmp_path / "s", teacher=teacher, show_progress=False)
    ck = load_torch(tmp_path / "s" / "student.pt")
    assert load_config_from_checkpoint(ck).model.depth_prior == "ellipsoid"
    del ck["config"]["model"]["depth_prior"]  # as written before the option existed
    assert load_config_from_checkpoint(ck).model.depth_prior == "none"
    torch.save(ck, tmp_path / "old.pt")
    s = Student.load(tmp_path / "old.pt", teacher=teacher)
    assert s.cfg.model.depth_prior == "none" and torch.count_nonzero(s.g3d.prior) == 0


def test_cycle_grad_compose_trains_m_only(teacher):
    """loss.cycle_grad=compose: the cycle term alone sends gradient to M and none to DV/DL (their
    weights are held), with the same loss value as LiftedGAN's "all", which trains all three."""
    only_cycle = ["loss.identity=0", "loss.rec=0", "loss.perturb=0", "loss.w_reg=0", "loss.albedo=0", "loss.canonical_symmetry=0",
                  "loss.cycle=4"]
    vals = {}
    for mode, dv_grad in (("all", True), ("compose", False)):
        torch.manual_seed(0)
        b = get_builder("digan")(_cfg(*only_cycle, f"loss.cycle_grad={mode}"), teacher)
        torch.manual_seed(3)
        total, logs = b.objective(torch.randn(3, 32))
        total.backward()
        g = b.core
        for net in ("view_net", "light_net"):
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(g, net).parameters()) == dv_grad, (mode, net)
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in g.compose.parameters()), mode
        vals[mode] = logs["cycle"].item()
    assert vals["compose"] == pytest.approx(vals["all"], rel=1e-6) and vals["all"] > 0


def test_cycle_image_trains_m_through_the_image_and_the_reader_on_teacher_images(teacher):
    """loss.cycle_image: the reader R exists only when the term is on; the term alone trains R
    (fitting DV/DL's readings of G(w), which it must not train) and M (through the teacher's image
    of w', with R held), nothing else; R held reads exactly what R reads."""
    assert build_g3d(_cfg(), teacher).reader is None
    assert not any(k.startswith("reader.") for k in build_g3d(_cfg(), teacher).state_dict())
    only = ["loss.identity=0", "loss.rec=0", "loss.perturb=0", "loss.cycle=0", "loss.w_reg=0", "loss.albedo=0", "loss.flip=0",
            "loss.canonical_symmetry=0", "loss.cycle_image=4"]
    torch.manual_seed(0)
    b = get_builder("digan")(_cfg(*only), teacher)
    g = b.core
    assert g.reader is not None and any(k.startswith("reader.") for k in g.state_dict())
    torch.manual_seed(3)
    total, logs = b.objective(torch.randn(3, 32))
    assert logs["cycle_image"] > 0 and logs["reader_fit"] > 0
    torch.testing.assert_close(total, 4 * (logs["cycle_image"] + logs["reader_fit"]))
    total.backward()

    def moved(net):
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())

    assert moved(g.reader) and moved(g.compose)
    assert not moved(g.view_net) and not moved(g.light_net) and not moved(g.depth_net)
    # held: same reading, gradient to the image only
    g.zero_grad(set_to_none=True)
    img = torch.rand(2, 3, 32, 32, requires_grad=True)
    hv, hl = g.read_held(img)
    rv, rl = g.reader(img)
    torch.testing.assert_close(hv, rv)
    torch.testing.assert_close(hl, rl)
    (hv.sum() + hl.sum()).backward()
    assert img.grad is not None and img.grad.abs().sum() > 0 and not moved(g.reader)
    with pytest.raises(DiganError, match="cycle_image"):
        build_g3d(_cfg(), teacher).read_held(img)


def _run_reading_codes(g, obj):
    """One objective step on 3 fixed latents (kept for inspection) -> (total, logs, the last
    (view_raw, light_raw) that DV/DL read in it: those of the perturbed codes w')."""
    codes = []
    decompose = g.decompose
    g.decompose = lambda w: codes.append(decompose(w)) or codes[-1]
    try:
        torch.manual_seed(3)
        total, logs = obj(torch.randn(3, 32), keep=True)
    finally:
        g.decompose = decompose
    return total, logs, codes[-1]


def test_perturb_view_image_renders_at_what_the_teachers_image_shows(teacher):
    """loss.perturb_view=image: the reader R exists (and is fitted to DV/DL's readings of G(w),
    a term that trains R only), the perturbation render is made at R's reading of G(w') (and
    DV's translation), not at DV/DL's reading of the code w'."""
    assert build_g3d(_cfg("loss.perturb_view=image"), teacher).reader is not None
    only_pert = ["loss.identity=0", "loss.rec=0", "loss.cycle=0", "loss.w_reg=0", "loss.albedo=0", "loss.canonical_symmetry=0",
                 "loss.flip=0", "loss.perturb=2"]
    for mode in ("code", "image"):
        torch.manual_seed(0)
        b = get_builder("digan")(_cfg(*only_pert, f"loss.perturb_view={mode}"), teacher)
        g, obj = b.core, b.objective
        if mode == "image":  # R reads a fixed pose and light whatever the image
            last = g.reader.head[-1]
            with torch.no_grad():
                last.weight.zero_()
                last.bias.copy_(torch.tensor([0.1, 0.4, 0.0, 0.2, 0.3, -0.5, 0.25]))
        total, logs, (view_p, light_p) = _run_reading_codes(g, obj)  # DV/DL(w'): the last reading
        if mode == "image":
            bias = torch.tanh(last.bias.detach())  # R's output layer is tanh
            view_r = torch.cat([bias[:3].expand(3, -1), view_p[:, 3:]], 1)
            light_r = bias[3:].expand(3, -1)
            assert logs["reader_fit"] > 0
            torch.testing.assert_close(total, 2 * logs["perturb"] + logs["reader_fit"])
        else:
            view_r, light_r = view_p, light_p
            assert "reader_fit" not in logs
        with torch.no_grad():
            want = g.render(obj.last["est"], obj.renderer, view=g.view_net.to_view(view_r), light=g.light_net.to_light(light_r)).image
        torch.testing.assert_close(obj.last["perturbed"], want)
        for t in (view_p, light_p):
            t.retain_grad()
        total.backward()
        # DV/DL's reading of w' gets gradient only when the render is made at it (DV's translation
        # always); the depth learns from the second view either way
        light_grad = 0.0 if light_p.grad is None else float(light_p.grad.abs().sum())
        read = float(view_p.grad[:, :3].abs().sum()) + light_grad > 0
        assert read == (mode == "code") and view_p.grad[:, 3:5].abs().sum() > 0, mode
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in g.depth_net.parameters()), mode


def test_perturb_depth_grad_none_keeps_the_perturbed_render_off_the_depth(teacher):
    """loss.perturb_depth_grad=none: the perturbation term alone still trains DV/DL (through the
    render at DV/DL(w')) but sends nothing to DS, with the same loss value as "all"."""
    only_pert = ["loss.identity=0", "loss.rec=0", "loss.cycle=0", "loss.w_reg=0", "loss.albedo=0", "loss.canonical_symmetry=0",
                 "loss.perturb=2"]
    vals = {}
    for mode, depth_grad in (("all", True), ("none", False)):
        torch.manual_seed(0)
        b = get_builder("digan")(_cfg(*only_pert, f"loss.perturb_depth_grad={mode}"), teacher)
        torch.manual_seed(3)
        total, logs = b.objective(torch.randn(3, 32))
        total.backward()
        g = b.core
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in g.depth_net.parameters()) == depth_grad, mode
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in g.view_net.parameters()), mode
        vals[mode] = logs["perturb"].item()
    assert vals["none"] == pytest.approx(vals["all"], rel=1e-5) and vals["all"] > 0


def test_light_vertical_false_has_no_vertical_light(teacher):
    """model.light_vertical=false: DL's light and the perturbed lights have dy = 0 exactly;
    the horizontal part is untouched."""
    from digan.student.objective import perturbation

    cfg = _cfg("loss.identity=0", "model.light_vertical=false", "loss.perturb_light=direction")
    b = get_builder("digan")(cfg, teacher)
    torch.manual_seed(3)
    total, logs = b.objective(torch.randn(4, 32), keep=True)
    light = b.objective.last["est"].light
    assert torch.equal(light.direction[:, 1], torch.zeros(4)) and light.direction[:, 0].abs().sum() > 0
    lp, _, _ = perturbation(torch.rand(64, 4) - 0.5, torch.zeros(64, 6), cfg, torch.Generator().manual_seed(0))
    assert torch.equal(lp[:, 3], torch.zeros(64)) and lp[:, 2].abs().max() > 0.5
    total.backward()  # still trains
    assert np.isfinite(total.item())


def test_depth_lr_scale_sets_the_depth_nets_step(teacher):
    """train.depth_lr_scale: Adam's first step moves a parameter by lr * g / (|g| + eps), i.e. by
    ~lr wherever the gradient is not tiny; the depth net's parameters must move by lr * scale,
    every other by lr. Scale 1 keeps one parameter group (old checkpoints' optimiser state fits)."""
    from digan.student.train import _param_groups

    lr = 1e-3
    for scale in (0.3, 1.0):
        cfg = _cfg("loss.identity=0", f"train.depth_lr_scale={scale}", f"train.lr={lr}", "train.weight_decay=0")
        torch.manual_seed(0)
        b = get_builder("digan")(cfg, teacher)
        groups = _param_groups(b.core, cfg)
        assert len(groups) == (1 if scale == 1.0 else 2)
        opt = torch.optim.Adam(groups, lr=lr, weight_decay=0)
        before = {n: p.detach().clone() for n, p in b.core.named_parameters()}
        checked = set()
        torch.manual_seed(3)
        b.objective(torch.randn(3, 32))[0].backward()
        grads = {n: p.grad.detach().clone() for n, p in b.core.named_parameters() if p.grad is not None}
        opt.step()
        for n, p in b.core.named_parameters():
            if n not in grads:
                continue
            big = grads[n].abs() > 1e-4  # where eps (1e-8) is negligible
            if not big.any():
                continue
            step = (p.detach() - before[n]).abs()[big]
            want = lr * (scale if n.startswith("depth_net.") else 1.0)
            torch.testing.assert_close(step, torch.full_like(step, want), rtol=1e-3, atol=1e-9, msg=n)
            checked.add(n.split(".")[0])
        assert {"depth_net", "view_net", "compose"} <= checked


def test_checkpoint_from_before_new_settings_resumes(teacher, tmp_path):
    """A checkpoint written before a setting existed (its stored config lacks the field, its
    config hash was computed without it) resumes when the setting is at the value that
    reproduces the old behaviour, and is refused when it is not."""
    from digan.config import config_hash
    from digan.utils.io import save_torch

    cfg = _cfg("train.steps=2", "train.ckpt_every=1", "train.grid_every=100", "loss.identity=0")
    out = tmp_path / "old"
    train(cfg, out, teacher=teacher, show_progress=False, max_steps_this_run=1)
    ck = load_torch(out / "checkpoint.pt")
    for sec, key in (("loss", "cycle_grad"), ("loss", "perturb_depth_grad"), ("model", "light_vertical"), ("train", "depth_lr_scale"),
                     ("loss", "cycle_image"), ("loss", "perturb_view"), ("train", "lr_decay"),
                     ("train", "ema"), ("train", "ema_start"), ("model", "shared_relief"),
                     ("train", "shared_relief_lr_scale")):
        del ck["config"][sec][key]
    old = {k: (dict(v) if isinstance(v, dict) else v) for k, v in ck["config"].items()}
    for k in ("steps", "ckpt_every", "grid_every", "log_every", "device", "threads", "eval_data", "eval_every", "eval_faces",
              "eval_inversion_steps", "lr"):
        old["train"].pop(k, None)
    ck["config_hash"] = config_hash(old)
    save_torch(out / "checkpoint.pt", ck)
    with pytest.raises(DiganError, match="different config"):
        train(_cfg("train.steps=2", "train.ckpt_every=1", "train.grid_every=100", "loss.identity=0", "model.light_vertical=false"),
              out, teacher=teacher, show_progress=False)
    r = train(cfg, out, teacher=teacher, show_progress=False)
    assert r.resumed_from == 1 and r.steps == 2


def test_sigterm_stops_student_training_like_ctrl_c(tmp_path, monkeypatch):
    """kill (SIGTERM) reaches the training as KeyboardInterrupt (the CLI's "interrupted ... rerun
    to resume", exit 130) and the output folder's claim is released, so the rerun can start."""
    import os
    import signal

    import digan.student.train as st

    before = signal.getsignal(signal.SIGTERM)
    calls = []

    def fake_train(cfg, out, *a, **k):
        calls.append(out)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return "resumed"

    monkeypatch.setattr(st, "_train", fake_train)
    cfg = make_config("tiny")
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        st.train(cfg, tmp_path / "run")
    assert signal.getsignal(signal.SIGTERM) is before
    assert st.train(cfg, tmp_path / "run") == "resumed"  # the folder is not left locked


def test_weight_average_closed_form():
    """WeightAverage: the value itself up to ``start``, then avg = d * avg + (1 - d) * value after
    every update (computed by hand); integer buffers are copied; applied() swaps it in and back."""
    from digan.student.train import WeightAverage

    m = torch.nn.Linear(1, 1, bias=False)
    m.register_buffer("count", torch.zeros((), dtype=torch.long))
    avg = WeightAverage(m, 0.5, start=2)
    seq = [1.0, 3.0, 5.0, 9.0]
    want = None
    for step, v in enumerate(seq, start=1):
        with torch.no_grad():
            m.weight.fill_(v)
        m.count.fill_(step)
        avg.update(m, step)
        want = v if step <= 2 else 0.5 * want + 0.5 * v
        assert avg.shadow["weight"].item() == pytest.approx(want) and avg.shadow["count"].item() == step
    assert want == pytest.approx(0.5 * (0.5 * 3 + 0.5 * 5) + 0.5 * 9)
    with avg.applied(m):
        assert m.weight.item() == pytest.approx(want)
    assert m.weight.item() == 9.0
    with pytest.raises(DiganError, match="decay"):
        WeightAverage(m, 1.0)


def test_ema_writes_the_average_leaves_training_unchanged_and_resumes_exactly(teacher, tmp_path):
    """train.ema: the trained weights are those of a run without it (training is unchanged),
    student.pt holds the average the checkpoint carries, and an interrupted run resumes to the
    same average; a bad value or a checkpoint without the average is a one-line error."""
    base = ["train.steps=4", "train.ckpt_every=1", "train.grid_every=100", "loss.identity=0", "train.depth_warmup=1"]
    train(_cfg(*base), tmp_path / "plain", teacher=teacher, show_progress=False)
    train(_cfg(*base, "train.ema=0.5"), tmp_path / "ema", teacher=teacher, show_progress=False)
    plain, ck = load_torch(tmp_path / "plain" / "checkpoint.pt"), load_torch(tmp_path / "ema" / "checkpoint.pt")
    student = load_torch(tmp_path / "ema" / "student.pt")["state"]
    assert all(torch.equal(plain["state"][k], ck["state"][k]) for k in plain["state"])
    assert all(torch.equal(student[k], ck["ema"][k]) for k in student)
    moved = [k for k in student if k.startswith("depth_net.") and not torch.equal(student[k], ck["state"][k])]
    assert moved  # the average differs from the last weights where they trained
    train(_cfg(*base, "train.ema=0.5"), tmp_path / "r", teacher=teacher, show_progress=False, max_steps_this_run=2)
    train(_cfg(*base, "train.ema=0.5"), tmp_path / "r", teacher=teacher, show_progress=False)
    resumed = load_torch(tmp_path / "r" / "student.pt")["state"]
    assert all(torch.equal(resumed[k], student[k]) for k in student)
    with pytest.raises(DiganError, match=r"train\.ema must be in \[0, 1\)"):
        train(_cfg(*base, "train.ema=1.0"), tmp_path / "bad", teacher=teacher, show_progress=False)
    with pytest.raises(DiganError, match=r"train\.ema_start must be >= 0"):
        train(_cfg(*base, "train.ema=0.5", "train.ema_start=-1"), tmp_path / "bad", teacher=teacher, show_progress=False)
    ck.pop("ema")
    torch.save(ck, tmp_path / "ema" / "checkpoint.pt")
    with pytest.raises(DiganError, match="no weight average"):
        train(_cfg(*base, "train.ema=0.5", "train.steps=5"), tmp_path / "ema", teacher=teacher, show_progress=False)


def test_pose_anchor_on_samples_reads_every_sample_and_perturbed_image(teacher, tmp_path):
    """loss.pose_anchor_samples: the pose reader sees the teacher's image of every sampled code
    and of every perturbed code; with every other term off the objective is exactly the anchor
    loss of DV's readings against the reader's angles (a missed face left out), and its steps
    pull DV's angles toward them; train without a detector file is a one-line error naming
    the setting."""
    from digan.student.losses import pose_anchor_loss

    want = torch.tensor([6.0, -20.0])
    seen = []

    def reader(images):
        seen.append(images.shape[0])
        out = want.expand(images.shape[0], 2).clone()
        out[0] = float("nan")  # a missed face
        return out.numpy()

    b = get_builder("digan")(_cfg("loss.pose_anchor_samples=5", "loss.identity=0"), teacher)
    b.objective.pose_reader = reader
    z = torch.randn(4, 32, generator=torch.Generator().manual_seed(3))
    _, logs = b.objective(z)
    assert seen == [8] and torch.isfinite(logs["pose_anchor_samples"])  # 4 samples + 4 perturbed images

    off = [f"loss.{k}=0" for k in ("rec", "flip", "perturb", "cycle", "identity", "w_reg", "albedo", "canonical_symmetry")]
    cfg = _cfg("loss.pose_anchor_samples=5", *off)
    b = get_builder("digan")(cfg, teacher)
    b.objective.pose_reader = reader
    g3d, rr = b.core, float(cfg.model.rotation_range)
    w, _ = sample_teacher(teacher, z, cfg.model.truncation)
    target = want.expand(4, 2).clone()
    target[0] = float("nan")
    total, logs = b.objective(z)
    ref = 5 * pose_anchor_loss(g3d.decompose(w)[0][:, :2], target / rr, (1.0, 1.0))
    assert total.item() == pytest.approx(ref.item(), rel=1e-5) and seen[-1] == 4
    with torch.no_grad():
        before = (g3d.decompose(w)[0][1:, :2] * rr - want).abs().mean().item()
    opt = torch.optim.Adam(g3d.view_net.parameters(), lr=3e-3)
    for _ in range(30):
        opt.zero_grad()
        b.objective(z)[0].backward()
        opt.step()
    with torch.no_grad():
        after = (g3d.decompose(w)[0][1:, :2] * rr - want).abs().mean().item()
    assert after < 0.3 * before, (before, after)
    cfg_t = _cfg("train.steps=1", "loss.pose_anchor_samples=1", f"train.pose_detector={tmp_path / 'no.onnx'}")
    with pytest.raises(DiganError, match="train.pose_detector=PATH"):
        train(cfg_t, tmp_path / "run", teacher=teacher, show_progress=False)


def test_perturb_view_detector_renders_at_dv_plus_the_detected_turn(teacher):
    """loss.perturb_view=detector: the perturbation render stands at DV's (pitch, yaw) of the
    unperturbed code plus the change the detector reads from G(w) to G(w') (a face the detector
    misses keeps DV(w')), with roll and translation from DV(w') and DL(w')'s light; the view is
    held (no gradient reaches DV through it). Each image is read once per step, also with
    loss.pose_anchor_samples on; without a reader it is a one-line error naming the setting."""
    only_pert = ["loss.identity=0", "loss.rec=0", "loss.cycle=0", "loss.w_reg=0", "loss.albedo=0",
                 "loss.canonical_symmetry=0", "loss.flip=0", "loss.perturb=2", "loss.perturb_view=detector"]
    seen = []

    def reader(images):  # G(w) reads (pitch, yaw) = (1, 2) + row; G(w') (5, 20) + row; a miss
        seen.append(images.shape[0])
        n = images.shape[0] // 2
        out = np.zeros((2 * n, 2), dtype=np.float32)
        out[:n] = [1.0, 2.0]
        out[n:] = [5.0, 20.0]
        out[:n] += np.arange(n)[:, None]
        out[n:] += np.arange(n)[:, None]
        out[n + 1] = np.nan  # the detector misses the second perturbed face
        return out

    torch.manual_seed(0)
    b = get_builder("digan")(_cfg(*only_pert), teacher)
    g, obj = b.core, b.objective
    torch.manual_seed(3)
    with pytest.raises(DiganError, match="train.pose_detector"):
        obj(torch.randn(3, 32))
    obj.pose_reader = reader
    total, logs, (view_p, light_p) = _run_reading_codes(g, obj)
    assert seen == [6]  # G(w) and G(w') of 3 codes, in one call
    view_w = obj.last["est"].view_raw
    rr = float(obj.cfg.model.rotation_range)
    turn = torch.tensor([4.0, 18.0]) / rr  # the detected change, the same for every row here
    want_rot = view_w[:, :2] + turn
    want_rot[1] = view_p[1, :2].detach()  # missed: DV(w')
    view_r = torch.cat([want_rot, view_p[:, 2:].detach()], 1)
    with torch.no_grad():
        want = g.render(obj.last["est"], obj.renderer, view=g.view_net.to_view(view_r),
                        light=g.light_net.to_light(light_p)).image
    torch.testing.assert_close(obj.last["perturbed"], want)
    view_p.retain_grad()
    total.backward()
    assert view_p.grad is None or view_p.grad.abs().sum() == 0  # the view is held
    # with pose_anchor_samples as well, the same readings serve both terms: one call per step
    seen.clear()
    b2 = get_builder("digan")(_cfg(*only_pert, "loss.pose_anchor_samples=5"), teacher)
    b2.objective.pose_reader = reader
    _, logs2 = b2.objective(torch.randn(3, 32))
    assert seen == [6] and torch.isfinite(logs2["pose_anchor_samples"])


def test_landmark_parallax_trains_the_depth_alone(teacher):
    """loss.landmark_parallax: with every other term off, the objective on inverted codes is
    exactly the landmark loss of the depth's own render at DV's view (keypoints of the codes'
    images from ``code_kps``), and its gradient reaches the depth only: DV, DL and the T map
    that carry the keypoints are held."""
    from digan.student.losses import landmark_parallax_loss

    cfg, g3d, total, logs, est, kps = _landmark_run(teacher, "loss.landmark_parallax=2")
    out = g3d.render(est, make_renderer(cfg, teacher.size))
    ref = 2 * landmark_parallax_loss(out.grid, out.mask, kps)
    assert ref.item() > 0 and total.item() == pytest.approx(ref.item(), rel=1e-4)
    assert logs["landmark_parallax"].item() == pytest.approx(ref.item() / 2, rel=1e-4)
    g3d.zero_grad()
    total.backward()
    grads = {n: p.grad for n, p in g3d.named_parameters()}
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith("depth_net."))
    # the depth is read from the canonical code w0 = M(w), so M learns through it as in every term
    # on the depth; DV, DL and the T map do not
    depth = ("depth_net.", "compose.")
    assert all(g is None or g.abs().sum() == 0 for n, g in grads.items() if not n.startswith(depth))
