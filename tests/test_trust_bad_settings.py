"""Training settings and output folders that used to end in a traceback, a broken teacher or a
clobbered folder now end in one ``error:`` line before anything is written:

* ``train`` / ``train-teacher`` with a NaN or negative lr, betas outside [0, 1), a 0-step
  interval (ZeroDivisionError), an empty batch; ``train-teacher --set w_mean_samples=0`` saved a
  teacher whose mean latent was NaN (every truncated sample black);
* ``train --eval-data`` that is not a synthetic set left an OUT with config.json and run.json;
* ``train``, ``train-teacher`` and ``run`` into another command's folder overwrote its run.json;
* ``--set 'model.channels={4:8}'`` (YAML reads 4:8 as the base-60 number 248) was reported as
  ``bad value None for model.channels.248``;
* a folder or an empty file given as a checkpoint.
"""

from __future__ import annotations

import json

import pytest

from digan.cli import main
from digan.config import apply_overrides
from digan.errors import DiganError
from digan.teacher.model import StyleGAN2Config
from digan.teacher.train import TeacherTrainConfig, check_settings

pytestmark = [pytest.mark.filterwarnings("ignore:VGG16 weights not found"), pytest.mark.filterwarnings("ignore:no torch face recogniser")]

TRAIN = ["train", "-t", "tiny", "--preset", "tiny", "--steps", "1", "--threads", "1", "--device", "cpu",
         "--set", "train.w_stats_samples=64", "--set", "loss.identity=0"]


def _error_line(capsys, rc) -> str:
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture()
def images(tmp_path):
    import numpy as np
    from PIL import Image

    d = tmp_path / "images"
    d.mkdir()
    for i in range(2):
        Image.fromarray(np.full((16, 16, 3), 60 * i, np.uint8)).save(d / f"{i}.png")
    return d


def _teacher_args(images, out):
    return ["train-teacher", "-d", str(images), "--out", str(out), "--steps", "1", "--batch", "2", "--threads", "1",
            "--device", "cpu", "--set", "model.size=16", "--set", "model.channels={4: 8, 8: 8, 16: 8}",
            "--set", "w_mean_samples=16", "--set", "grid_n=1"]


@pytest.mark.parametrize("setting, expect", [
    ("train.lr=-1", "train.lr must be a positive finite number (got -1.0)"),
    ("train.lr=nan", "train.lr must be a positive finite number (got nan)"),
    ("train.batch=0", "train.batch must be at least 1"),
    ("train.ckpt_every=0", "train.ckpt_every must be at least 1"),
    ("train.log_every=0", "train.log_every must be at least 1"),
    ("train.w_stats_samples=0", "train.w_stats_samples must be at least 1"),
    ("train.betas=[1.5,0.9]", "train.betas must be two numbers in [0, 1)"),
    ("train.seed=99999999999999999999", "train.seed must be in 0..2**62-1"),
    ("loss.rec=-5", "loss.rec must be a non-negative finite number (got -5.0"),
    ("loss.landmark_parallax=nan", "loss.landmark_parallax must be a non-negative finite number (got nan"),
    ("loss.pose_anchor=-1", "loss.pose_anchor must be a non-negative finite number"),
    ("loss.perturb_translation=inf", "loss.perturb_translation must be a finite number"),
])
def test_student_training_numbers_are_checked_before_any_output(tmp_path, capsys, setting, expect):
    line = _error_line(capsys, main([*TRAIN, "--set", setting, "--out", str(tmp_path / "run")]))
    assert expect in line and "--set " + setting.split("=")[0].split(".")[0] + "." in line, line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", ["missing", "not_synth"])
def test_bad_eval_data_leaves_no_output_folder(tmp_path, capsys, images, kind):
    eval_data = tmp_path / "nope" if kind == "missing" else images
    line = _error_line(capsys, main([*TRAIN, "--eval-data", str(eval_data), "--out", str(tmp_path / "run")]))
    assert str(eval_data) in line and "data synth" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("setting, expect", [
    ("lr=nan", "lr must be a positive finite number (got nan)"),
    ("betas=[2,0.9]", "betas must be two numbers in [0, 1)"),
    ("ckpt_every=0", "ckpt_every must be at least 1"),
    ("d_reg_every=0", "d_reg_every must be at least 1"),
    ("grid_n=0", "grid_n must be at least 1"),
    ("w_mean_samples=0", "w_mean_samples must be at least 1"),
    ("mixing=2", "mixing is a probability in [0, 1]"),
    ("seed=-5", "seed must be in 0..2**62-1"),
])
def test_teacher_training_numbers_are_checked_before_any_output(tmp_path, capsys, images, setting, expect):
    line = _error_line(capsys, main([*_teacher_args(images, tmp_path / "t"), "--set", setting]))
    assert expect in line, line
    assert not (tmp_path / "t").exists()


def test_every_preset_passes_the_teacher_checks():
    from digan.teacher.train import PRESETS, preset_config

    for name in PRESETS:
        check_settings(preset_config(name))
    check_settings(TeacherTrainConfig(model=StyleGAN2Config(size=16)))


def _foreign(tmp_path, kind):
    d = tmp_path / f"{kind}_out"
    d.mkdir()
    (d / "run.json").write_text(json.dumps({"kind": kind, "created": "earlier"}))
    (d / "summary.md").write_text("earlier results\n")
    return d


def test_training_never_writes_into_another_commands_folder(tmp_path, capsys, images):
    res = _foreign(tmp_path, "run")
    before = (res / "run.json").read_bytes()
    line = _error_line(capsys, main([*TRAIN, "--out", str(res)]))
    assert "holds the outputs of 'digan-bench run'" in line and "--force" in line
    line = _error_line(capsys, main(_teacher_args(images, res)))
    assert "holds the outputs of 'digan-bench run'" in line
    assert (res / "run.json").read_bytes() == before and sorted(p.name for p in res.iterdir()) == ["run.json", "summary.md"]


def test_run_never_writes_into_a_training_folder(tmp_path, capsys, images):
    tr = _foreign(tmp_path, "train")
    before = (tr / "run.json").read_bytes()
    line = _error_line(capsys, main(["run", "--methods", "digan", "--metrics", "speed", "-n", "1", "--device", "cpu",
                                     "--out", str(tr)]))
    assert "holds the outputs of 'digan-bench train'" in line and "choose another --out" in line
    assert (tr / "run.json").read_bytes() == before and not (tr / "records").exists()


def test_a_training_folder_of_the_same_kind_still_resumes(tmp_path, images):
    out = tmp_path / "t"
    assert main(_teacher_args(images, out)) == 0
    assert json.loads((out / "run.json").read_text())["kind"] == "train-teacher"
    args = _teacher_args(images, out)
    args[args.index("--steps") + 1] = "2"
    assert main(args) == 0
    assert json.loads((out / "run.json").read_text())["kind"] == "train-teacher"


def test_mapping_override_without_spaces_names_the_fix():
    with pytest.raises(DiganError, match=r"bad value '\{4:8,8:8\}' for model.channels: put a space after each ':'"):
        apply_overrides(TeacherTrainConfig(), ["model.channels={4:8,8:8}"])
    cfg = apply_overrides(TeacherTrainConfig(), ["model.channels={4: 8, 8: 8}", "device=cuda:0"])
    assert cfg.model.channels == {4: 8, 8: 8} and cfg.device == "cuda:0"


def test_checkpoint_that_is_a_folder_or_empty(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    line = _error_line(capsys, main(["sample", "--teacher", str(run), "-n", "1", "--out", str(tmp_path / "s")]))
    assert f"{run} is a folder, not a checkpoint file" in line
    (run / "teacher.pt").write_bytes(b"")
    line = _error_line(capsys, main(["sample", "--teacher", str(run), "-n", "1", "--out", str(tmp_path / "s")]))
    assert f"pass {run / 'teacher.pt'}" in line
    line = _error_line(capsys, main(["sample", "--teacher", str(run / "teacher.pt"), "-n", "1", "--out", str(tmp_path / "s")]))
    assert "is empty (0 bytes" in line
    assert not (tmp_path / "s").exists()


def test_seeds_beyond_64_bits_wrap_as_torch_does_instead_of_overflowing(tmp_path, capsys):
    import torch

    from digan.utils.seeding import latents, torch_generator

    # torch itself takes -2**63..2**64-1 modulo 2**64: the same numbers, and no OverflowError beyond
    for seed in (-1, 2**64 + 5, -(2**70)):
        want = torch.randn(3, generator=torch.Generator().manual_seed(seed % 2**64))
        assert torch.equal(torch.randn(3, generator=torch_generator(seed)), want)
    assert torch.equal(latents(2, 4, seed=-1), latents(2, 4, seed=-1))
    big = str(10**20)
    assert main(["sample", "--teacher", "tiny", "-n", "1", "--device", "cpu", "--seed", big, "--out", str(tmp_path / "s")]) == 0
    line = _error_line(capsys, main(["data", "synth", "--out", str(tmp_path / "d"), "--n", "1", "--seed", "-1"]))
    assert "bad seed -1: use 0 or more" in line and not (tmp_path / "d").exists()
