"""Teacher training: G and D steps move the discriminator's real/fake gap the right way, weights
change, resume (after a finished shorter run and after Ctrl-C) equals an uninterrupted run
bit for bit, NaN losses stop with the checkpoint kept, augmentation ops against direct
references, data-folder errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from digan.errors import DiganError, NonFiniteLossError
from digan.teacher.augment import Augment, AugmentConfig, _cutout, _translation, ada_augment, diff_augment
from digan.teacher.model import StyleGAN2Config
from digan.teacher.train import TeacherTrainConfig, TeacherTrainer, preset_config, train_teacher
from digan.utils.io import sha256_file

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: one intra-op thread is as fast and immune to a busy shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


MODEL = StyleGAN2Config(size=16, style_dim=16, n_mlp=2, channels={4: 16, 8: 16, 16: 8})


def _cfg(**kw) -> TeacherTrainConfig:
    base = dict(model=MODEL, batch=4, steps=4, d_reg_every=2, g_reg_every=2, path_regularize=1.0, r1=1.0,
                augment=AugmentConfig(kind="ada", p=0.3, ada_target=0.0), log_every=1, sample_every=2, ckpt_every=2,
                grid_n=4, w_mean_samples=64, device="cpu")
    base.update(kw)
    return TeacherTrainConfig(**base)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """12 simple 16x16 'faces': a light ellipse with two dark eyes on a coloured background."""
    d = tmp_path_factory.mktemp("teacher_data")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:16, 0:16]
    for i in range(12):
        a = np.zeros((16, 16, 3), np.uint8)
        a[:] = rng.integers(0, 120, 3)
        face = ((xx - 7.5) / 5) ** 2 + ((yy - 8) / 6.5) ** 2 < 1
        a[face] = rng.integers(160, 255, 3)
        a[6:8, 5:7] = a[6:8, 9:11] = 20
        Image.fromarray(a).save(d / f"{i:03d}.png")
    return d


def _real(data_dir: Path, n: int) -> torch.Tensor:
    from digan.teacher.data import ImageFolderData

    return ImageFolderData(data_dir, size=16, mirror=False).load(list(range(n)))


def test_d_steps_widen_and_g_steps_close_the_score_gap(data_dir):
    torch.manual_seed(0)
    cfg = _cfg(augment=AugmentConfig(kind="none"), mixing=0.0, lr=0.005)
    tr = TeacherTrainer(cfg)
    real = _real(data_dir, 8)
    z = torch.randn(8, 16)

    def gap() -> float:  # D(real) - D(fake) on fixed inputs, fixed noise
        with torch.no_grad():
            fake = tr.g([z], randomize_noise=False)[0]
            return float(tr.d(real).mean() - tr.d(fake).mean())

    g0 = {k: v.clone() for k, v in tr.g.state_dict().items()}
    gap0 = gap()
    for _ in range(6):
        tr.d_step(real)
    gap_d = gap()
    assert gap_d > gap0 + 0.05  # D learns to separate real from fake
    assert all(torch.equal(v, tr.g.state_dict()[k]) for k, v in g0.items())  # D steps leave G alone
    for _ in range(6):
        tr.g_step(8)
    gap_g = gap()
    assert gap_g < gap_d - 0.05  # G learns to close the gap
    # a full iteration changes G, D and the EMA generator, and the EMA differs from G
    d0 = {k: v.clone() for k, v in tr.d.state_dict().items()}
    e0 = {k: v.clone() for k, v in tr.g_ema.state_dict().items()}
    tr.train_step(real)
    assert not torch.equal(d0["final_linear.1.weight"], tr.d.state_dict()["final_linear.1.weight"])
    assert not torch.equal(e0["convs.1.conv.weight"], tr.g_ema.state_dict()["convs.1.conv.weight"])
    assert not torch.equal(tr.g.state_dict()["convs.1.conv.weight"], tr.g_ema.state_dict()["convs.1.conv.weight"])


def test_lazy_regularisation_adam_correction_and_ema_rampup():
    cfg = _cfg(lr=0.002, d_reg_every=16, g_reg_every=4, path_regularize=2.0, betas=(0.0, 0.99), ema_kimg=10.0, ema_rampup=0.05)
    tr = TeacherTrainer(cfg)
    dg = tr.d_optim.param_groups[0]
    assert dg["lr"] == pytest.approx(0.002 * 16 / 17) and dg["betas"][1] == pytest.approx(0.99 ** (16 / 17))
    assert tr.g_optim.param_groups[0]["lr"] == pytest.approx(0.002 * 4 / 5)
    tr.step = 100  # 400 images seen: half-life min(10000, 0.05 * 400 = 20) images
    assert tr.ema_decay() == pytest.approx(0.5 ** (4 / 20))
    tr.step = 10**6
    assert tr.ema_decay() == pytest.approx(0.5 ** (4 / 10000))


def _load_weights(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", weights_only=False)


def _assert_same_state(a: dict, b: dict) -> None:
    for key in ("g", "d", "g_ema"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), f"{key}.{k} differs"
    assert a["step"] == b["step"] and a["aug"] == b["aug"] and a["pl_mean"] == b["pl_mean"]
    for oa, ob in ((a["g_optim"], b["g_optim"]), (a["d_optim"], b["d_optim"])):
        for i, st in oa["state"].items():
            assert torch.equal(st["exp_avg"], ob["state"][i]["exp_avg"])


def _losses(run: Path) -> list[dict]:
    with open(run / "losses.csv") as f:
        return [{k: v for k, v in r.items() if k != "sec_per_step"} for r in csv.DictReader(f)]


def test_resume_is_bit_exact(data_dir, tmp_path):
    full = tmp_path / "full"
    train_teacher(_cfg(steps=5), data_dir, full)
    # (1) a finished shorter run extended with more steps
    part = tmp_path / "part"
    train_teacher(_cfg(steps=2), data_dir, part)
    r = train_teacher(_cfg(steps=5), data_dir, part)
    assert r.resumed_from == 2 and r.steps == 5
    _assert_same_state(_load_weights(full), _load_weights(part))
    assert _losses(full) == _losses(part)
    # (2) interrupted with Ctrl-C after step 3, then rerun
    intr = tmp_path / "intr"

    def stop(step, stats):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_teacher(_cfg(steps=5), data_dir, intr, on_step=stop)
    assert _load_weights(intr)["step"] == 3
    train_teacher(_cfg(steps=5), data_dir, intr)
    _assert_same_state(_load_weights(full), _load_weights(intr))
    assert _losses(full) == _losses(intr)
    # outputs: grids, teacher file loadable by the student-facing API
    assert (full / "samples" / "step_000004.png").is_file() and (full / "samples" / "step_000005.png").is_file()
    from digan.teacher import load_teacher

    t = load_teacher(full / "teacher.pt")
    assert t.size == 16 and t.w_mean_source.startswith("latent_avg")
    assert (full / "config.json").is_file() and (full / "run.json").is_file()
    # a different config refuses to resume
    with pytest.raises(DiganError, match="different config"):
        train_teacher(_cfg(steps=6, r1=0.5), data_dir, full)  # (lr may change on resume: issue 12)


def test_sigterm_saves_like_ctrl_c(data_dir, tmp_path):
    """kill (SIGTERM) stops a run through the Ctrl-C path: a checkpoint at the step reached, the
    previous SIGTERM handler back afterwards, and the rerun continues from there."""
    import signal

    from digan.utils.signals import terminate_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    run = tmp_path / "term"

    def term(step, stats):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        train_teacher(_cfg(steps=4), data_dir, run, on_step=term)
    assert _load_weights(run)["step"] == 2
    assert signal.getsignal(signal.SIGTERM) is before
    assert train_teacher(_cfg(steps=4), data_dir, run).resumed_from == 2
    # the handler is installed only inside the block
    with terminate_as_interrupt() as installed:
        assert installed and signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


def test_interrupt_in_the_middle_of_a_step_saves_after_it(data_dir, tmp_path, monkeypatch):
    """SIGTERM arriving between a step's discriminator and generator updates is held until the
    step is complete: the checkpoint is the state after that step (not half of it), and the
    resumed run equals an uninterrupted one bit for bit; the handlers are restored after."""
    import signal

    full = tmp_path / "full"
    train_teacher(_cfg(steps=5), data_dir, full)
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    calls = []
    g_step = TeacherTrainer.g_step

    def g_step_killed(self, *a, **k):  # the D update of this step is done, the G update not yet
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return g_step(self, *a, **k)

    monkeypatch.setattr(TeacherTrainer, "g_step", g_step_killed)
    run = tmp_path / "mid"
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        train_teacher(_cfg(steps=5, ckpt_every=100), data_dir, run)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert _load_weights(run)["step"] == 3
    monkeypatch.setattr(TeacherTrainer, "g_step", g_step)
    assert train_teacher(_cfg(steps=5, ckpt_every=100), data_dir, run).resumed_from == 3
    _assert_same_state(_load_weights(full), _load_weights(run))
    assert _losses(full) == _losses(run)


def test_a_second_interrupt_inside_a_step_stops_at_once():
    """interrupts_between_steps: one signal is raised when the block ends, a second one at once."""
    import signal

    from digan.utils.signals import interrupts_between_steps

    done = []
    with pytest.raises(KeyboardInterrupt, match="SIGINT"):
        with interrupts_between_steps():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("after the first")
    assert done == ["after the first"]
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        with interrupts_between_steps():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("after the second")
    assert done == ["after the first"]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data_dir, tmp_path, monkeypatch):
    import digan.teacher.train as tt

    run = tmp_path / "nan"
    train_teacher(_cfg(steps=2), data_dir, run)
    before = sha256_file(run / "checkpoint.pt")
    real_loss = tt.d_logistic_loss
    calls = {"n": 0}

    def flaky(real_pred, fake_pred):
        calls["n"] += 1
        out = real_loss(real_pred, fake_pred)
        return out * float("nan") if calls["n"] == 2 else out

    monkeypatch.setattr(tt, "d_logistic_loss", flaky)
    with pytest.raises(NonFiniteLossError) as e:
        train_teacher(_cfg(steps=6), data_dir, run)
    msg = str(e.value)
    assert "non-finite d loss" in msg and "step 4" in msg and "checkpoint.pt (step 2) was kept" in msg and "lr=" in msg
    assert sha256_file(run / "checkpoint.pt") == before


def test_data_folder_errors(tmp_path, data_dir):
    with pytest.raises(DiganError, match="not found"):
        train_teacher(_cfg(), tmp_path / "missing", tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DiganError, match="no images"):
        train_teacher(_cfg(), tmp_path / "empty", tmp_path / "o")
    with pytest.raises(DiganError, match=r"model.size=16"):
        train_teacher(_cfg(model=StyleGAN2Config(size=32, style_dim=16, n_mlp=1, channels={4: 8, 8: 8, 16: 8, 32: 8})), data_dir, tmp_path / "o")


def test_data_order_is_a_function_of_step():
    from digan.teacher.data import ImageFolderData

    d = ImageFolderData.__new__(ImageFolderData)
    d.n, d.mirror, d.seed, d._perm_epoch, d._perm = 5, True, 3, -1, None
    idx = d.indices(0, 30)
    assert sorted(idx[:10]) == list(range(10)) and sorted(idx[10:20]) == list(range(10))  # each epoch a permutation
    assert d.indices(7, 11) == idx[7:18]  # any window equals the same slice of a full pass


def test_presets():
    tiny = preset_config("tiny")
    assert tiny.model.size == 64 and tiny.model.style_dim <= 256 and max(tiny.model.channels.values()) <= 256
    std = preset_config("standard")
    assert std.model.channel_multiplier == 2 and std.model.style_dim == 512 and std.model.n_mlp == 8 and std.path_regularize == 2
    with pytest.raises(DiganError, match="choose one of"):
        preset_config("huge")


# ---------------------------------------------------------------- augmentation -------------

def test_diffaugment_translation_and_cutout_against_direct_reference():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 8, 8) + 0.5  # strictly positive so zeros mark shifted-in or cut pixels
    y = _translation(x)
    for b in range(16):
        ok = False
        for dy in range(-1, 2):
            for dx in range(-1, 2):
                ref = torch.zeros_like(x[b])
                # output(i, j) = input(i + dy, j + dx) where inside, else 0
                ys, yd = slice(max(dy, 0), 8 + min(dy, 0)), slice(max(-dy, 0), 8 + min(-dy, 0))
                xs, xd = slice(max(dx, 0), 8 + min(dx, 0)), slice(max(-dx, 0), 8 + min(-dx, 0))
                ref[:, yd, xd] = x[b][:, ys, xs]
                ok |= torch.equal(ref, y[b])
        assert ok, f"image {b} is not an integer shift"
    z = _cutout(x)
    for b in range(16):
        hole = (z[b] == 0).all(0)
        assert torch.equal(z[b][:, ~hole], x[b][:, ~hole])
        rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
        assert hole.sum() == len(rows) * len(cols) and len(rows) <= 4 and len(cols) <= 4  # one <= 4x4 rectangle
    # brightness/saturation/contrast: on a grey image saturation does nothing, brightness is a constant shift
    g = torch.full((4, 3, 8, 8), 0.2)
    out = diff_augment(g, "color")
    assert torch.allclose(out, out[:, :1, :1, :1].expand_as(out))
    with pytest.raises(DiganError, match="unknown DiffAugment policy"):
        diff_augment(g, "colour")


def test_ada_identity_at_zero_constant_images_and_adaptive_p():
    x = torch.rand(8, 3, 8, 8) * 2 - 1
    assert torch.equal(ada_augment(x, 0.0), x)
    c = torch.rand(8, 3, 1, 1).expand(8, 3, 8, 8).contiguous()
    y = ada_augment(c, 1.0)  # geometry keeps a constant image constant; colour maps it to another constant
    assert torch.allclose(y, y[:, :, :1, :1].expand_as(y), atol=1e-5)
    assert not torch.allclose(y, c)
    xg = x.clone().requires_grad_(True)
    ada_augment(xg, 0.7).square().sum().backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    aug = Augment(AugmentConfig(kind="ada", p=0.1, ada_target=0.6, ada_kimg=1.0, ada_interval=2))
    for _ in range(2):
        aug.accumulate(torch.ones(4, 1))  # r_t = 1 > 0.6: D overfits, p goes up
        aug.update(images_per_step=4)
    assert aug.p == pytest.approx(0.1 + 4 * 2 / 1000)
    for _ in range(2):
        aug.accumulate(-torch.ones(4, 1))
        aug.update(images_per_step=4)
    assert aug.p == pytest.approx(0.1)


# ---------------------------------------------------------------- multi-process -------------

@pytest.mark.slow
def test_ddp_two_cpu_processes(data_dir, tmp_path):
    """torchrun with 2 gloo processes on CPU for 2 steps: runs, replicas agree, checkpoint loads."""
    out = tmp_path / "ddp"
    env = dict(os.environ, DIGAN_BENCH_QUIET="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "digan.cli", "train-teacher", "--data", str(data_dir), "--out", str(out), "--preset", "tiny",
           "--set", "model.size=16", "--set", "model.channels={4: 16, 8: 16, 16: 8}", "--set", "model.style_dim=16",
           "--set", "steps=2", "--set", "batch=4", "--set", "w_mean_samples=64", "--set", "grid_n=4"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 2 and len(ck["rng"]) == 2
    from digan.teacher import load_teacher

    assert load_teacher(out / "teacher.pt").size == 16


def test_init_from_an_exported_teacher_continues_its_weights_and_step(data_dir, tmp_path):
    from digan.teacher.train import init_from_teacher

    train_teacher(_cfg(steps=4), data_dir, tmp_path / "a")
    src = tmp_path / "a" / "teacher.pt"
    from digan.utils.io import load_torch

    exported = load_torch(src, what="teacher")
    tr = TeacherTrainer(_cfg(), "cpu")
    assert init_from_teacher(tr, src) == 4 and tr.step == 4
    for name, model in (("g", tr.g), ("g_ema", tr.g_ema)):  # G starts as the exported G_ema
        for k, v in model.state_dict().items():
            if k in exported["g_ema"]:
                assert torch.equal(v, exported["g_ema"][k].float()), (name, k)
    for k, v in tr.d.state_dict().items():
        if k in exported["d"]:
            assert torch.equal(v, exported["d"][k].float()), k
    # a run started from it counts its steps on from the teacher's, and then resumes as usual
    r = train_teacher(_cfg(steps=6, init_from=str(src)), data_dir, tmp_path / "b")
    assert r.resumed_from == 4 and r.steps == 6
    with open(tmp_path / "b" / "losses.csv") as fh:
        assert [int(row["step"]) for row in csv.DictReader(fh)] == [5, 6]
    assert train_teacher(_cfg(steps=6, init_from=str(src)), data_dir, tmp_path / "b").resumed_from == 6
    with pytest.raises(DiganError, match="already at step 4; pass --steps above 4"):
        train_teacher(_cfg(steps=4, init_from=str(src)), data_dir, tmp_path / "c")
    with pytest.raises(DiganError, match="not found"):
        init_from_teacher(TeacherTrainer(_cfg(), "cpu"), tmp_path / "missing.pt")
    other = _cfg(model=StyleGAN2Config(size=16, style_dim=8, n_mlp=2, channels={4: 16, 8: 16, 16: 8}))
    with pytest.raises(DiganError, match="another architecture"):
        init_from_teacher(TeacherTrainer(other, "cpu"), src)


def test_init_from_the_bundled_teacher():
    from digan.teacher.train import init_from_teacher

    # the step it counts on from is the one the bundle's provenance records
    from digan.teacher.api import bundled_teacher_path

    recorded = json.loads(bundled_teacher_path().with_suffix(".json").read_text())["steps"]
    tr = TeacherTrainer(preset_config("tiny"), "cpu")
    assert init_from_teacher(tr, "tiny") == recorded > 6500
    assert all(torch.equal(a, b) for a, b in zip(tr.g.parameters(), tr.g_ema.parameters()))
