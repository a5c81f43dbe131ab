"""The recoverability check (digan.student.recoverability): with the true view, light and albedo
given, DIGAN's depth parameterisation, renderer and image loss must move the depth from the
prior toward the true head; without the depth low-pass the same fit shreds the surface."""

from __future__ import annotations

import math

import pytest
import torch

from digan.errors import DiganError
from digan.student.config import make_config
from digan.student.recoverability import RecoverConfig, recover_report, recover_shape


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    from digan.data.synth import generate_synth

    out = tmp_path_factory.mktemp("recover") / "synth"
    generate_synth(out, n=8, size=64, seed=3)  # a seed no tuning used
    return out


def _fit(synth_dir, smooth: float, steps: int = 60):
    cfg = make_config("tiny", overrides=[f"model.depth_smooth={smooth}", "loss.perc=0"])
    rc = RecoverConfig(n_identities=2, steps=steps, eval_every=steps // 2, yaws=(-30.0, 0.0, 30.0), lr=0.01,
                       settings=("true_pose_true_albedo",))
    return recover_shape(synth_dir, cfg, rc)


@pytest.fixture(scope="module")
def smooth_fit(synth_dir):
    return _fit(synth_dir, 2.0)


def test_true_pose_and_albedo_recover_shape_with_the_low_pass(smooth_fit):
    res = smooth_fit
    curve = res["settings"]["true_pose_true_albedo"]["curve"]
    prior = res["references"]["prior_only"]
    # step 0 is the prior itself (the free residual starts at zero)
    assert curve[0]["mad"] == pytest.approx(prior["mad"], rel=1e-6)
    assert [r["step"] for r in curve] == [0, 30, 60]
    # the fit improves monotonically and clearly on both errors
    assert curve[1]["mad"] < curve[0]["mad"] and curve[2]["mad"] < curve[1]["mad"]
    assert curve[-1]["mad"] < prior["mad"] - 5.0
    assert curve[-1]["side"] < 0.8 * prior["side"]
    # and stays about as smooth as a real head (not shredded)
    assert curve[-1]["roughness"] < 1.5 * res["truth"]["roughness"]
    # and puts the inner face's detail (nose, brow) where the truth has it, which the prior does not
    assert curve[0]["detail_corr"] == pytest.approx(prior["detail_corr"], abs=1e-9)
    assert prior["detail_corr"] < 0.2 and curve[-1]["detail_corr"] > prior["detail_corr"] + 0.3
    rows = recover_report(res)
    assert rows[0][0] == "prior_only" and rows[-1][0] == "true_pose_true_albedo"
    assert rows[1][-2] == "n/a" and rows[-1][-2] == f"{curve[-1]['detail_corr']:+.2f}"  # a plane has no curvature
    # the nose: a flat plane has none (its flanks and tip at one depth); the fit starts at the
    # prior's and grows it
    assert rows[1][-1] == "0.00x" and prior["nose_ratio"] == pytest.approx(curve[0]["nose_ratio"], abs=1e-9)
    assert rows[-1][-1] == f"{curve[-1]['nose_ratio']:.2f}x"
    assert curve[-1]["nose_ratio"] > prior["nose_ratio"] + 0.2  # measured: 0.32x -> 0.76x


def test_without_the_low_pass_the_same_fit_roughens_the_depth(synth_dir, smooth_fit):
    rough = _fit(synth_dir, 0.0)["settings"]["true_pose_true_albedo"]["final"]["roughness"]
    smooth = smooth_fit["settings"]["true_pose_true_albedo"]["final"]["roughness"]
    assert rough > 2.0 * smooth


def test_unknown_setting_is_a_one_line_error(synth_dir):
    from digan.errors import DiganError

    with pytest.raises(DiganError, match="unknown recoverability setting"):
        recover_shape(synth_dir, make_config("tiny"), RecoverConfig(settings=("nope",)))



@pytest.mark.parametrize("bad, match", [({"lr": -1.0}, "learning rate > 0"), ({"lr": float("nan")}, "learning rate > 0"),
                                        ({"steps": 0}, "steps >= 1"), ({"yaws": (0.0, 100.0)}, "between -90 and 90"),
                                        ({"yaws": ()}, "between -90 and 90")])
def test_bad_fit_settings_are_one_line_errors(synth_dir, bad, match):
    from digan.errors import DiganError

    with pytest.raises(DiganError, match=match) as e:
        recover_shape(synth_dir, make_config("tiny"), RecoverConfig(**bad))
    assert "\n" not in str(e.value)


def test_through_the_teacher_fits_the_teachers_reproductions(synth_dir, monkeypatch):
    """--through-teacher N: the views are rendered over the set's backdrops, inverted into the
    teacher with N steps, and the fit's targets are the teacher's images (its PSNR reported);
    without a teacher it is a one-line error."""
    import numpy as np

    import digan.student.method as method
    from digan.errors import DiganError
    from digan.student.testing import random_teacher

    teacher = random_teacher(size=64, style_dim=32, width=8, seed=0)
    cfg = make_config("tiny", overrides=["loss.perc=0", "train.w_stats_samples=256"])
    rc = RecoverConfig(n_identities=2, steps=4, eval_every=2, yaws=(-30.0, 0.0, 30.0), settings=("true_pose_true_albedo",),
                       through_teacher=3)
    seen = {}
    invert = method.invert_teacher

    def spy(t, images, w_std, steps, *a, **k):
        seen["images"], seen["steps"] = images.clone(), steps
        return invert(t, images, w_std, steps, *a, **k)

    monkeypatch.setattr(method, "invert_teacher", spy)
    res = recover_shape(synth_dir, cfg, rc, teacher=teacher)
    assert seen["steps"] == 3 and res["teacher"]["inversion_steps"] == 3 and np.isfinite(res["teacher"]["psnr_db"])
    corner = seen["images"][:, :, :2, :2]  # over the set's backdrops, not white
    assert float(corner.max()) < 0.99
    exact = recover_shape(synth_dir, cfg, RecoverConfig(n_identities=2, steps=4, eval_every=2, yaws=(-30.0, 0.0, 30.0),
                                                         settings=("true_pose_true_albedo",)))
    assert "teacher" not in exact
    assert res["settings"]["true_pose_true_albedo"]["final"]["mad"] != exact["settings"]["true_pose_true_albedo"]["final"]["mad"]
    with pytest.raises(DiganError, match="needs a teacher"):
        recover_shape(synth_dir, cfg, rc)


# ---------------------------------------------------------------- objective_fit (bench objective-fit)

pytestmark = [pytest.mark.filterwarnings("ignore:VGG16 weights not found")]

@pytest.fixture(scope="module")
def small_student(tmp_path_factory):
    from digan.data.synth import generate_synth
    from digan.student.build import build_g3d
    from digan.student.inference import Student
    from digan.student.testing import random_teacher

    teacher = random_teacher(size=64, style_dim=32, width=8, seed=0)
    cfg = make_config("tiny", overrides=["train.w_stats_samples=256", "loss.identity=0"])
    torch.manual_seed(1)
    g3d = build_g3d(cfg, teacher)
    for p in g3d.depth_net.parameters():  # a depth net that is not the prior
        torch.nn.init.normal_(p, std=0.05)
    gt = tmp_path_factory.mktemp("objfit") / "gt"
    generate_synth(gt, n=4, size=64, seed=3)
    return Student(g3d, teacher, cfg), gt


REC_ONLY = ["loss.perturb=0", "loss.cycle=0", "loss.w_reg=0", "loss.canonical_symmetry=0", "loss.albedo=0"]


def test_objective_fit_starts_at_the_student_and_moves_only_the_residual(small_student):
    from digan.student.diagnostics import load_eval_faces, reconstruction_report
    from digan.student.recoverability import objective_fit

    st, gt = small_student
    before = {k: v.clone() for k, v in st.g3d.state_dict().items()}
    res = objective_fit(st, gt, n_faces=4, steps=6, lr=0.05, inversion_steps=2, overrides=REC_ONLY, eval_every=1)
    # step 0 is the student as it is (bench shape's scores with the inversion objective-fit uses:
    # no fitted image shift), untouched by the fit
    faces, yaw = load_eval_faces(gt, 4, 64)
    was, st.cfg.model.inversion_shift_lr = st.cfg.model.inversion_shift_lr, 0.0
    try:
        rep = reconstruction_report(st, faces, yaw, 2)
    finally:
        st.cfg.model.inversion_shift_lr = was
    first = res["curve"][0]
    assert first["mad"] == pytest.approx(rep["student"]["mad"], rel=1e-6)
    assert first["detail_corr"] == pytest.approx(rep["detail"]["corr"], rel=1e-6, abs=1e-9)
    if "nose" in rep:  # bench shape's nose protrusion over the truth's, the same number
        assert first["nose_ratio"] == pytest.approx(rep["nose"]["student_ratio"], rel=1e-6, abs=1e-9, nan_ok=True)
    else:
        assert math.isnan(first["nose_ratio"])
    assert res["references"]["flat_plane"]["mad"] == pytest.approx(rep["flat_plane"]["mad"], rel=1e-6)
    assert res["references"]["prior_posed"]["side"] == pytest.approx(rep["prior_posed"]["side"], rel=1e-6)
    for k, v in st.g3d.state_dict().items():
        assert torch.equal(v, before[k]), k
    # the fitted residual changes the scored depth, and the (deterministic, rec-only) loss falls
    assert [r["step"] for r in res["curve"]] == list(range(7))
    assert res["final"]["mad"] != first["mad"]
    losses = [r["loss"]["total"] for r in res["curve"][1:]]
    assert losses[-1] < losses[0]
    assert res["config"]["overrides"] == REC_ONLY and res["config"]["targets"] == "teacher"


def test_objective_fit_bad_settings_are_one_line_errors(small_student):
    from digan.student.recoverability import objective_fit

    st, gt = small_student
    with pytest.raises(DiganError, match="teacher' or 'exact"):
        objective_fit(st, gt, n_faces=3, steps=1, targets="real")
    with pytest.raises(DiganError, match="changes the student's networks"):
        objective_fit(st, gt, n_faces=3, steps=1, inversion_steps=1, overrides=["model.depth_nf=4"])
    for steps, lr in ((0, 0.01), (1, 0.0), (1, float("nan"))):
        with pytest.raises(DiganError, match="steps >= 1"):
            objective_fit(st, gt, n_faces=3, steps=steps, lr=lr)


def test_bench_objective_fit_cli_fits_80_columns(tmp_path, capsys):
    import json

    from digan.cli import main
    from digan.data.synth import generate_synth
    from digan.student.method import BUNDLED_STUDENT

    generate_synth(tmp_path / "gt", n=3, size=64, seed=2)
    rc = main(["bench", "objective-fit", "--student", str(BUNDLED_STUDENT), "--data", str(tmp_path / "gt"), "-n", "3",
               "--steps", "2", "--inversion-steps", "2", "--threads", "1", "--targets", "exact", "--set", "loss.flip=0",
               "--out", str(tmp_path / "fit.json")])
    assert rc in (0, None)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert max(len(ln) for ln in lines) <= 80, max(lines, key=len)
    res = json.loads((tmp_path / "fit.json").read_text())
    assert [r["step"] for r in res["curve"]] == [0, 1, 2] and res["config"]["overrides"] == ["loss.flip=0"]
    assert any(ln.split()[:1] == ["2"] and f"{res['final']['mad']:.1f}" in ln for ln in lines)
    assert any(ln.startswith("flat plane") and f"{res['references']['flat_plane']['mad']:.1f} deg" in ln for ln in lines)
    rc = main(["bench", "objective-fit", "--student", str(BUNDLED_STUDENT), "--data", str(tmp_path / "gt"), "--targets", "real"])
    assert rc == 2 and "choose teacher or exact" in capsys.readouterr().err
