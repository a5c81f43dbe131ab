"""3D accuracy measured while a student trains (``train --eval-data``): rows at the expected steps
with finite numbers, resume without duplicated steps, training unchanged by the evaluation, and
the report's figure of the rows; the inversion PSNR against a numpy reference."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from digan.errors import DiganError
from digan.student.config import make_config
from digan.student.diagnostics import SHAPE_EVAL_COLUMNS, masked_psnr, read_shape_eval
from digan.student.testing import random_teacher
from digan.student.train import train
from digan.utils.io import load_torch

pytestmark = [pytest.mark.filterwarnings("ignore:VGG16 weights not found"), pytest.mark.filterwarnings("ignore:no torch face recogniser")]

S = 64
FINITE = ("side", "mad", "roughness", "roughness_gt", "roughness_ratio", "flat_side", "flat_mad", "prior_side", "prior_mad",
          "prior_roughness", "posed_prior_side", "posed_prior_mad", "face_mad", "face_prior_mad", "one_head_mad", "mean_true_head_mad", "nose_ratio", "yaw_corr", "yaw_slope", "pitch_corr",
          "psnr_teacher", "psnr_student")


@pytest.fixture(scope="module")
def teacher():
    return random_teacher(size=S, style_dim=32, width=8, seed=0)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from digan.data.synth import generate_synth

    p = tmp_path_factory.mktemp("eval") / "synth"
    generate_synth(p, n=8, size=S, seed=11)
    return p


def _cfg(synth, *extra):
    return make_config("tiny", overrides=["train.w_stats_samples=256", "train.batch=2", "train.log_every=1", "train.threads=1",
                                          "train.steps=4", "train.ckpt_every=2", "train.grid_every=100", "train.depth_warmup=0",
                                          "loss.identity=0", "train.eval_faces=4", "train.eval_inversion_steps=2", *extra]
                       + ([f"train.eval_data={synth}"] if synth else []))


def _steps(run):
    return [int(r["step"]) for r in read_shape_eval(run)]


def test_masked_psnr_matches_numpy():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    b = (a + 0.1 * torch.randn(2, 3, 8, 8, generator=g)).clamp(-1, 1)
    m = (torch.rand(2, 1, 8, 8, generator=g) > 0.3).float()
    got = masked_psnr(a, b, m).numpy()
    for i in range(2):
        sel = np.broadcast_to(m[i].numpy() > 0, (3, 8, 8))
        mse01 = np.mean(((a[i].double().numpy() - b[i].double().numpy()) / 2)[sel] ** 2)  # in [0, 1] units
        assert got[i] == pytest.approx(-10 * math.log10(mse01), rel=1e-9)
    # pixels outside the mask do not count; an error of 0.2 (in [-1,1]) everywhere -> 20 dB
    c = a.clone()
    c[..., :4] += 0.2
    half = torch.zeros(2, 1, 8, 8)
    half[..., :4] = 1
    assert masked_psnr(c, a, half).numpy() == pytest.approx([20.0, 20.0])
    assert masked_psnr(c, a, 1 - half).numpy().tolist() == [math.inf, math.inf]


def test_training_logs_shape_rows_and_resumes_without_duplicates(teacher, synth, tmp_path):
    run = tmp_path / "run"
    one = "model.flip_average=false"  # one inversion per head: half the cost; the mirror's part is tested elsewhere
    train(_cfg(synth, "train.eval_every=2", one), run, teacher=teacher, show_progress=False, max_steps_this_run=2)
    assert _steps(run) == [0, 2]
    # a row written after the step-2 checkpoint by a run that then died: dropped on resume
    with open(run / "shape_eval.jsonl", "a") as f:
        f.write(json.dumps({"step": 3, "side": 0.5}) + "\n")
    res = train(_cfg(synth, "train.eval_every=2", one), run, teacher=teacher, show_progress=False)
    assert res.resumed_from == 2 and res.steps == 4
    rows = read_shape_eval(run)
    assert [r["step"] for r in rows] == [0, 2, 4]
    for r in rows:
        assert list(r) == list(SHAPE_EVAL_COLUMNS)
        for k in FINITE:
            assert r[k] is not None and math.isfinite(r[k]), (r["step"], k)
        assert r["n_faces"] == 4 and r["inversion_steps"] == 2 and 0 <= r["mad"] <= 180 and -1 <= r["yaw_corr"] <= 1
        assert r["roughness_ratio"] == pytest.approx(r["roughness"] / r["roughness_gt"])
        assert 0 < r["w0_spread"] < 2 and 0 <= r["w0_own"] <= 1
    # the tiny preset's residual M starts as the identity: at step 0 every w0 is its own w
    assert rows[0]["w0_spread"] == pytest.approx(1.0) and rows[0]["w0_own"] == 1.0
    # the prior and the faces do not change during training; its scores do only through the
    # student's pixels they are measured on (the render's coverage), so they stay close
    assert [r["prior_roughness"] for r in rows] == pytest.approx([rows[0]["prior_roughness"]] * 3, rel=0.05)
    assert [r["prior_mad"] for r in rows] == pytest.approx([rows[0]["prior_mad"]] * 3, rel=0.05)
    csv_lines = (run / "shape_eval.csv").read_text().splitlines()
    assert csv_lines[0].split(",") == list(SHAPE_EVAL_COLUMNS) and [int(line.split(",")[0]) for line in csv_lines[1:]] == [0, 2, 4]
    # the cadence defaults to ckpt_every; --force starts the log over
    train(_cfg(synth, "train.ckpt_every=3"), run, teacher=teacher, show_progress=False, force=True)
    assert _steps(run) == [0, 3, 4]


def test_evaluation_leaves_training_unchanged(teacher, synth, tmp_path):
    train(_cfg(synth, "train.steps=3", "train.eval_every=1"), tmp_path / "a", teacher=teacher, show_progress=False)
    train(_cfg(None, "train.steps=3"), tmp_path / "b", teacher=teacher, show_progress=False)
    assert _steps(tmp_path / "a") == [0, 1, 2, 3] and not (tmp_path / "b" / "shape_eval.jsonl").exists()
    sa, sb = (load_torch(tmp_path / d / "student.pt")["state"] for d in ("a", "b"))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_bad_eval_settings_are_one_line_errors(teacher, synth, tmp_path):
    with pytest.raises(DiganError, match="not found"):
        train(_cfg(tmp_path / "nosuch"), tmp_path / "r1", teacher=teacher, show_progress=False)
    with pytest.raises(DiganError, match="eval_faces >= 3"):
        train(_cfg(synth, "train.eval_faces=2"), tmp_path / "r2", teacher=teacher, show_progress=False)
    with pytest.raises(DiganError, match="--size 32"):  # a 32 px student, 64 px heads
        train(_cfg(synth), tmp_path / "r3", teacher=random_teacher(size=32, style_dim=32, width=8), show_progress=False)


def _write_rows(run, rows):
    run.mkdir(parents=True)
    (run / "shape_eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_shape_eval_figure_one_line_per_run_with_dashed_references(tmp_path):
    from reports import figures as F

    def rows(k):
        return [{"step": s, "side": 0.02 - 0.001 * s / 100 - k * 1e-3, "mad": 40 - s / 50, "roughness": 5e-3 / (1 + s / 100),
                 "roughness_gt": 2.7e-3, "flat_side": 0.0133, "flat_mad": 41.1, "prior_side": 0.0132, "prior_mad": 34.2,
                 "prior_roughness": 2.5e-3, "yaw_corr": 0.5 + s / 1000 if s else None,
                 **({"light_dx_corr": 0.1 + s / 1000, "light_dy_corr": -0.2, "posed_prior_side": 0.012, "posed_prior_mad": 31.0}
                    if k == 0 else {})} for s in (0, 100, 200)]

    _write_rows(tmp_path / "a" / "digan", rows(0))
    _write_rows(tmp_path / "b" / "digan", rows(1))
    (tmp_path / "losses_only").mkdir()  # a run trained without --eval-data is left out
    fig = F.shape_eval_figure([tmp_path / "a" / "digan", tmp_path / "b" / "digan", tmp_path / "losses_only"])
    side_ax, mad_ax, rough_ax, yaw_ax = fig.axes
    assert [a.get_title() for a in fig.axes][:3] == ["SIDE (held-out heads)", "MAD (degrees)", "depth roughness (mean |Laplacian|)"]
    solid = [ln for ln in side_ax.get_lines() if ln.get_linestyle() == "-"]
    assert [ln.get_label() for ln in solid] == ["a/digan", "b/digan"]  # same folder names: the parent tells them apart
    np.testing.assert_allclose(solid[1].get_xdata(), [0, 100, 200])
    np.testing.assert_allclose(solid[1].get_ydata(), [r["side"] for r in rows(1)])
    assert [ln.get_ydata()[0] for ln in side_ax.get_lines() if ln.get_linestyle() == "--"] == [0.0132, 0.0132]  # prior only
    # the posed prior: drawn for the run that logged it (a), absent for an older log (b)
    assert [ln.get_ydata()[0] for ln in mad_ax.get_lines() if ln.get_linestyle() == ":"] == [31.0]
    assert [ln.get_ydata()[0] for ln in side_ax.get_lines() if ln.get_linestyle() == "-."] == [0.0133, 0.0133]  # flat plane
    assert [ln.get_ydata()[0] for ln in rough_ax.get_lines() if ln.get_linestyle() == ":"] == [2.7e-3, 2.7e-3]  # ground truth
    assert np.isnan(yaw_ax.get_lines()[0].get_ydata()[0])  # a missing value is a gap, not a crash
    assert yaw_ax.get_title() == "DV yaw and DL light vs the truth (1 = perfect)"
    # light columns: drawn for the run that logged them (a), absent for an older log (b)
    np.testing.assert_allclose([ln.get_ydata() for ln in yaw_ax.get_lines() if ln.get_linestyle() == "--"], [[0.1, 0.2, 0.3]])
    assert [ln.get_ydata()[0] for ln in yaw_ax.get_lines() if ln.get_linestyle() == "-."] == [-0.2]
    png, _ = F.save_figure(fig, tmp_path, "shape_eval")
    assert png.stat().st_size > 5000
    assert F.shape_eval_figure([tmp_path / "losses_only"]) is None


def test_report_runs_draws_the_shape_plot_of_a_trained_run(teacher, synth, tmp_path):
    from evaluate.records import Record
    from reports.report import ReportConfig, build_report

    run = tmp_path / "run"
    train(_cfg(synth, "train.steps=2", "train.eval_every=1"), run, teacher=teacher, show_progress=False)
    assert _steps(run) == [0, 1, 2]
    res = build_report(tmp_path / "results", tmp_path / "report", ReportConfig(runs=[str(run)], formats=("png",)),
                       records=[Record("digan", "side", value=0.013, higher_is_better=False)])
    assert "figures/shape_eval.png" in res.figures and (tmp_path / "report" / "figures" / "shape_eval.png").stat().st_size > 5000
    assert "3D accuracy during training" in res.html.read_text()
    # training runs alone (no benchmark results yet): `digan-bench report --runs RUN` draws them
    from digan.cli import main

    rc = main(["report", "--runs", str(run), "--results", str(tmp_path / "no_results"), "--out", str(tmp_path / "r2")])
    assert rc in (0, None) and (tmp_path / "r2" / "figures" / "shape_eval.png").is_file()


def test_train_cli_eval_data_option(synth, tmp_path, capsys):
    from digan.cli import main
    from digan.student.testing import save_random_teacher

    save_random_teacher(tmp_path / "t.pt", size=S, style_dim=32, width=8)
    out = tmp_path / "run"
    rc = main(["train", "--teacher", str(tmp_path / "t.pt"), "--preset", "tiny", "--steps", "1", "--out", str(out), "--eval-data", str(synth),
               "-s", "train.w_stats_samples=256", "-s", "train.batch=2", "-s", "loss.identity=0", "-s", "train.eval_faces=3",
               "-s", "train.eval_inversion_steps=1"])
    assert rc in (0, None)
    assert json.loads((out / "config.json").read_text())["train"]["eval_data"] == str(synth)
    assert _steps(out) == [0, 1]  # fresh run, then the last step (eval_every defaults to ckpt_every = 250)
    text = capsys.readouterr().out
    assert "3D at step 1" in text and "shape_eval.csv" in text


def test_keep_best_keeps_the_student_at_the_best_evaluation_after_warmup(teacher, synth, tmp_path):
    """train.keep_best=mad: best.pt is the student at the evaluation with the lowest MAD among
    those after the depth warm-up (the same weights a run stopped at that step ends with), it
    survives an interrupted run, and it needs --eval-data."""
    cfg = _cfg(synth, "train.eval_every=1", "train.depth_warmup=1", "train.keep_best=mad")
    run = tmp_path / "a"
    train(cfg, run, teacher=teacher, show_progress=False, max_steps_this_run=2)
    res = train(cfg, run, teacher=teacher, show_progress=False)  # resumed from step 2
    rows = read_shape_eval(run)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    after = [r for r in rows if r["step"] > 1]
    want = min(after, key=lambda r: r["mad"])
    info = json.loads((run / "best.json").read_text())
    assert res.best == info and info["key"] == "mad" and info["step"] == want["step"] and info["value"] == pytest.approx(want["mad"])
    # an uninterrupted run keeps the same best, and a run stopped at that step has its weights
    b = tmp_path / "b"
    train(cfg, b, teacher=teacher, show_progress=False)
    assert json.loads((b / "best.json").read_text())["step"] == info["step"]
    c = tmp_path / "c"
    train(_cfg(synth, f"train.steps={info['step']}", "train.depth_warmup=1"), c, teacher=teacher, show_progress=False)
    best, stopped = load_torch(run / "best.pt"), load_torch(c / "student.pt")
    assert best["step"] == info["step"] and best["format"] == stopped["format"]
    assert all(torch.equal(best["state"][k], stopped["state"][k]) for k in stopped["state"])
    # evaluations during the warm-up (depth = prior) are never chosen
    d = tmp_path / "d"
    res = train(_cfg(synth, "train.eval_every=1", "train.depth_warmup=3", "train.keep_best=side"), d, teacher=teacher, show_progress=False)
    assert res.best["step"] == 4 and res.best["key"] == "side"
    with pytest.raises(DiganError, match="--eval-data"):
        train(_cfg(None, "train.keep_best=mad"), tmp_path / "e", teacher=teacher, show_progress=False)
    assert not (tmp_path / "e").exists()


def test_ema_evaluates_and_keeps_the_weight_average(teacher, synth, tmp_path):
    """With train.ema the rows logged during training score the weight average: the last row is
    what the written student.pt scores when evaluated on its own, and best.pt is the average too."""
    from digan.student.diagnostics import load_eval_faces, reconstruction_report
    from digan.student.inference import Student

    run = tmp_path / "ema"
    # depth_warmup=3: the average starts at step 3 and best.pt can only be step 4's
    train(_cfg(synth, "train.eval_every=1", "train.ema=0.5", "train.keep_best=side", "train.depth_warmup=3"), run, teacher=teacher,
          show_progress=False)
    last = read_shape_eval(run)[-1]
    student = Student.load(run / "student.pt", teacher=teacher)
    student.g3d.eval()
    gt, yaw = load_eval_faces(synth, 4, S)
    rep = reconstruction_report(student, gt, yaw, 2)
    assert last["step"] == 4 and rep["student"]["mad"] == pytest.approx(last["mad"], rel=1e-5)
    ck = load_torch(run / "checkpoint.pt")
    info = json.loads((run / "best.json").read_text())
    best = load_torch(run / "best.pt")["state"]
    assert info["step"] == 4 and all(torch.equal(best[k], ck["ema"][k]) for k in best)
    assert any(not torch.equal(best[k], ck["state"][k]) for k in best)
    live = Student.load(run / "checkpoint.pt", teacher=teacher)
    live.g3d.eval()
    assert reconstruction_report(live, gt, yaw, 2)["student"]["mad"] != pytest.approx(last["mad"], rel=1e-5)
