"""Issue 12, items 2-7: no NaN or half-written models, one writer per output folder.

Each test reproduces a case that used to end wrong: a diverging student or teacher kept (or
wrote) non-finite checkpoints, the suggested fix was refused, a completed teacher run lacked its
``teacher.pt``, ``--force`` mixed an old and a new run, ``--steps 0`` "succeeded", two processes
wrote one folder, and killed writes left hidden temporaries behind.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from digan.cli import main
from digan.errors import NonFiniteLossError
from digan.student.config import make_config
from digan.student.testing import save_random_teacher
from digan.student.train import train
from digan.utils.io import load_torch, nonfinite_tensors, output_lock

pytestmark = [pytest.mark.filterwarnings("ignore:VGG16 weights not found"), pytest.mark.filterwarnings("ignore:no torch face recogniser")]

REPO = Path(__file__).resolve().parents[1]
_STUDENT_SETS = ["train.w_stats_samples=256", "train.batch=2", "train.log_every=1", "train.threads=1", "loss.identity=0",
                 "train.grid_every=1000", "train.depth_warmup=0"]


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("teacher") / "t.pt"
    save_random_teacher(p, size=32, style_dim=32, width=8)
    return p


def _student_args(teacher: Path, out: Path, *extra: str) -> list[str]:
    args = ["train", "--teacher", str(teacher), "--preset", "tiny", "--out", str(out)]
    for s in _STUDENT_SETS:
        args += ["--set", s]
    return args + list(extra)


def _all_finite(path: Path) -> bool:
    ck = load_torch(path)
    return not nonfinite_tensors({k: ck[k] for k in ("state", "optimizer", "g", "d", "g_ema", "g_optim", "d_optim") if k in ck})


def _suggested_fix(line: str, key: str) -> list[str]:
    """The options the error line tells the user to add (``--set KEY=V``, maybe ``--force``)."""
    import re

    m = re.search(r"\((--force )?--set " + re.escape(key) + r"=([^)\s]+)\)", line)
    assert m, line
    return (["--force"] if m.group(1) else []) + ["--set", f"{key}={m.group(2)}"]


def _one_error_line(err: str) -> str:
    lines = [l for l in err.strip().splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------ item 2: non-finite
def test_diverging_student_keeps_only_finite_checkpoints_and_lower_lr_resumes(teacher_file, tmp_path, capsys):
    out = tmp_path / "s"
    rc = main(_student_args(teacher_file, out, "--steps", "6", "--set", "train.ckpt_every=1", "--set", "train.lr=1e3"))
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2 and ("non-finite" in line or "diverged" in line)
    assert not (out / "student.pt").exists()
    if (out / "checkpoint.pt").exists():
        assert _all_finite(out / "checkpoint.pt")
    # the fix the message suggests works
    fix = _suggested_fix(line, "train.lr")
    rc = main(_student_args(teacher_file, out, "--steps", "3", "--set", "train.ckpt_every=1", "--set", "train.lr=1e3") + fix)
    err = capsys.readouterr().err
    assert rc == 0, err
    assert _all_finite(out / "student.pt") and _all_finite(out / "checkpoint.pt")


def test_lowering_lr_resumes_a_run(teacher_file, tmp_path, capsys):
    """train.lr may change on resume (the advice for a run whose older checkpoint is good)."""
    out = tmp_path / "s"
    assert main(_student_args(teacher_file, out, "--steps", "1", "--set", "train.lr=1e-3")) == 0
    rc = main(_student_args(teacher_file, out, "--steps", "2", "--set", "train.lr=1e-4"))
    assert rc == 0, capsys.readouterr().err
    assert load_torch(out / "student.pt")["step"] == 2


def test_student_never_saves_nonfinite_weights_even_with_a_finite_loss(teacher_file, tmp_path, monkeypatch):
    """Weights poisoned by the last optimiser step (loss still finite): no checkpoint.pt and no
    student.pt is written with them (the '--steps 2' case that exited 0 with NaN tensors)."""
    cfg = make_config("tiny", "no_albedo", _STUDENT_SETS + ["train.steps=2", "train.ckpt_every=1"])
    train(cfg, tmp_path / "n", teacher_path=teacher_file, show_progress=False, max_steps_this_run=1)
    good = load_torch(tmp_path / "n" / "checkpoint.pt")
    orig = torch.optim.Adam.step

    def poison(self, *a, **k):
        r = orig(self, *a, **k)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(float("nan"))
        return r

    monkeypatch.setattr(torch.optim.Adam, "step", poison)
    with pytest.raises(NonFiniteLossError, match=r"last good checkpoint .*\(step 1\) was kept \(finite\)"):
        train(cfg, tmp_path / "n", teacher_path=teacher_file, show_progress=False)
    assert not (tmp_path / "n" / "student.pt").exists()
    kept = load_torch(tmp_path / "n" / "checkpoint.pt")
    assert kept["step"] == 1 and not nonfinite_tensors(kept["state"])
    assert all(torch.equal(good["state"][k], kept["state"][k]) for k in good["state"])


def _images(folder: Path, n: int = 6, size: int = 16) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _teacher_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train-teacher", "--data", str(data), "--out", str(out), "--preset", "tiny", "--batch", "4", "--threads", "1",
            "--set", "model.size=16", "--set", "model.channels={4: 16, 8: 16, 16: 8}", "--set", "w_mean_samples=64",
            "--set", "grid_n=4", *extra]


def test_diverging_teacher_keeps_only_finite_checkpoints_and_lower_lr_resumes(tmp_path, capsys):
    data = _images(tmp_path / "data")
    out = tmp_path / "t"
    assert main(_teacher_args(data, out, "--steps", "1", "--set", "ckpt_every=1")) == 0
    capsys.readouterr()
    rc = main(_teacher_args(data, out, "--steps", "8", "--set", "ckpt_every=1", "--set", "lr=1e6"))
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2
    assert _all_finite(out / "checkpoint.pt") and _all_finite(out / "teacher.pt")
    fix = _suggested_fix(line, "lr")
    rc = main(_teacher_args(data, out, "--steps", "3", "--set", "ckpt_every=1", "--set", "lr=1e6") + fix)
    assert rc == 0, capsys.readouterr().err
    assert load_torch(out / "checkpoint.pt")["step"] == 3 and _all_finite(out / "checkpoint.pt") and _all_finite(out / "teacher.pt")


# ------------------------------------------------------------------ items 3 and 5
def test_completed_teacher_run_always_has_its_model(tmp_path, capsys):
    data = _images(tmp_path / "data")
    out = tmp_path / "t"
    assert main(_teacher_args(data, out, "--steps", "2")) == 0
    ref = load_torch(out / "checkpoint.pt")
    # killed between writing checkpoint.pt and teacher.pt at the final step
    (out / "teacher.pt").unlink()
    capsys.readouterr()
    assert main(_teacher_args(data, out, "--steps", "2")) == 0
    assert "teacher.pt" in capsys.readouterr().out
    t = load_torch(out / "teacher.pt")
    assert t["step"] == 2 and all(torch.equal(t["g_ema"][k], ref["g_ema"][k]) for k in ref["g_ema"])
    from digan.teacher import load_teacher

    assert load_teacher(out / "teacher.pt").size == 16


@pytest.mark.parametrize("steps", ["0", "-1"])
def test_train_teacher_needs_steps(tmp_path, capsys, steps):
    data = _images(tmp_path / "data")
    rc = main(_teacher_args(data, tmp_path / "t", "--steps", steps))
    assert rc == 2 and "steps" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "t").exists()


# ------------------------------------------------------------------ item 4: --force
def test_force_keeps_the_old_run_until_the_new_one_is_complete(teacher_file, tmp_path):
    out = tmp_path / "f"
    old = make_config("tiny", overrides=_STUDENT_SETS + ["train.steps=1", "train.seed=0"])
    train(old, out, teacher_path=teacher_file, show_progress=False)
    old_student = load_torch(out / "student.pt")
    new = make_config("tiny", overrides=_STUDENT_SETS + ["train.steps=3", "train.seed=1", "train.ckpt_every=1"])
    # the new run stops after its first checkpoint (as if killed): the old run is untouched
    train(new, out, teacher_path=teacher_file, force=True, show_progress=False, max_steps_this_run=1)
    assert json.loads((out / "config.json").read_text())["train"]["seed"] == 0
    assert load_torch(out / "checkpoint.pt")["config"]["train"]["seed"] == 0
    cur = load_torch(out / "student.pt")
    assert all(torch.equal(cur["state"][k], old_student["state"][k]) for k in cur["state"])
    stale = [p for p in tmp_path.iterdir() if p.name.startswith(".f.") and p.name.endswith(".tmp")]
    assert stale, "the unfinished --force run lives in a hidden staging folder"
    # complete: now (and only now) the new run replaces the old one, and the debris is gone
    r = train(new, out, teacher_path=teacher_file, force=True, show_progress=False)
    assert r.out_dir == out and r.student_path == out / "student.pt"
    assert json.loads((out / "config.json").read_text())["train"]["seed"] == 1
    assert load_torch(out / "student.pt")["config"]["train"]["seed"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".f.") and (p.name.endswith(".tmp") or ".old-" in p.name)]


# ------------------------------------------------------------------ item 6: one writer
_HOLDER = ("import sys, time; sys.path.insert(0, {repo!r}); from digan.utils.io import output_lock\n"
           "with output_lock({out!r}):\n    print('held', flush=True); time.sleep(120)\n")


def _hold(out: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", _HOLDER.format(repo=str(REPO), out=str(out))], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_writer_stops_at_once_and_a_dead_holder_does_not_block(teacher_file, tmp_path, capsys):
    data = _images(tmp_path / "data")
    outs = {"train": tmp_path / "s", "train-teacher": tmp_path / "t", "run": tmp_path / "r"}
    cmds = {
        "train": _student_args(teacher_file, outs["train"], "--steps", "1"),
        "train-teacher": _teacher_args(data, outs["train-teacher"], "--steps", "1"),
        "run": ["run", "--methods", "teacher:" + str(teacher_file), "--metrics", "speed", "--n-faces", "2",
                "--data", f"synth={data}", "--out", str(outs["run"])],
    }
    for name, args in cmds.items():
        holder = _hold(outs[name])
        try:
            t0 = time.time()
            rc = main(args)
            line = _one_error_line(capsys.readouterr().err)
            assert rc == 2 and f"{outs[name]} is in use by pid {holder.pid}" in line, (name, line)
            assert time.time() - t0 < 20
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
    # the holder died without cleaning up: its lock file does not block the next command
    assert (tmp_path / ".s.lock").exists()
    assert main(cmds["train"]) == 0, capsys.readouterr().err
    with output_lock(outs["train"]):
        with output_lock(outs["train"]):  # re-entry in the same process is allowed
            pass


# ------------------------------------------------------------------ item 7: debris
def test_hidden_temporaries_of_killed_writes_are_removed_by_the_next_command(teacher_file, tmp_path, capsys):
    out = tmp_path / "s"
    args = _student_args(teacher_file, out, "--steps", "1")
    assert main(args) == 0
    debris = [out / ".checkpoint.pt.ab12cd34.tmp", out / "grids" / ".step_0000001.png.zz99yy88.tmp"]
    for d in debris:
        d.parent.mkdir(exist_ok=True)
        d.write_bytes(b"half")
    sibling = tmp_path / ".s.k3j4h5g6.tmp"  # a killed atomic_dir / --force build of this folder
    sibling.mkdir()
    keep = [out / ".keepme", tmp_path / ".other.ab12cd34.tmp"]  # not ours: stays
    for k in keep:
        k.write_text("x")
    assert main(args) == 0
    assert not any(d.exists() for d in debris) and not sibling.exists()
    assert all(k.exists() for k in keep)


def test_sample_cleans_its_own_killed_build(teacher_file, tmp_path):
    out = tmp_path / "samples"
    stale = tmp_path / ".samples.q1w2e3r4.tmp"
    stale.mkdir()
    (stale / "000000.png").write_bytes(b"x")
    assert main(["sample", "--teacher", str(teacher_file), "--n", "1", "--out", str(out)]) == 0
    assert not stale.exists() and (out / "images" / "000000.png").is_file()
