"""Shape diagnostics (``digan-bench bench shape``): the pose-agreement statistics against closed
forms, and the report of an untrained student whose depth is exactly its prior."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from digan.errors import DiganError
from digan.student.build import build_g3d
from digan.student.config import make_config
from digan.render.types import Light
from digan.student.diagnostics import light_agreement, masked_std, pose_agreement, shape_diagnostics, yaw_moment
from digan.student.inference import Student
from digan.student.testing import random_teacher

pytestmark = [pytest.mark.filterwarnings("ignore:VGG16 weights not found"), pytest.mark.filterwarnings("ignore:no torch face recogniser")]


def test_shift_agreement_closed_forms():
    from digan.student.diagnostics import shift_agreement

    yaw = np.array([-30.0, -10.0, 0.0, 5.0, 25.0])
    true_tx = np.array([0.001, -0.002, 0.0, 0.003, -0.001])
    a = shift_agreement(-0.0002 * yaw, yaw, true_tx)  # a shift that follows the yaw alone
    assert a["per_10deg"] == pytest.approx(-0.002) and a["corr_yaw"] == pytest.approx(-1.0)
    assert a["pred_std"] == pytest.approx(0.0002 * yaw.std()) and a["true_std"] == pytest.approx(true_tx.std())
    b = shift_agreement(true_tx, yaw, true_tx)  # the true shift read exactly
    assert b["corr_true"] == pytest.approx(1.0) and b["per_10deg"] == pytest.approx(10 * np.polyfit(yaw, true_tx, 1)[0])
    assert "true_std" not in shift_agreement(true_tx, yaw)


def test_pose_agreement_closed_forms():
    t = np.array([-30.0, -10.0, 0.0, 5.0, 25.0])
    a = pose_agreement(2 * t + 3, t)
    assert a["corr"] == pytest.approx(1.0) and a["slope"] == pytest.approx(2.0)
    b = pose_agreement(-0.5 * t, t)  # the hollow-face signature: mirrored yaw
    assert b["corr"] == pytest.approx(-1.0) and b["slope"] == pytest.approx(-0.5)
    rng = np.random.default_rng(0)
    p = rng.normal(size=200)
    q = rng.normal(size=200)
    assert pose_agreement(p, q)["corr"] == pytest.approx(np.corrcoef(p, q)[0, 1])
    with pytest.raises(DiganError):
        pose_agreement(t[:2], t[:2])


def test_corr_interval_matches_scipy_and_covers_at_its_level():
    from scipy import stats

    from digan.student.diagnostics import corr_interval

    rng = np.random.default_rng(3)
    x = rng.normal(size=48)
    y = x + 0.25 * rng.normal(size=48)
    r = stats.pearsonr(x, y)
    want = r.confidence_interval(0.95)
    assert corr_interval(r.statistic, 48) == pytest.approx((want.low, want.high), abs=1e-12)
    # the interval's meaning: over many draws of 48 pairs from a population with correlation
    # rho, about 95 % of the intervals hold rho
    rho, hits, trials = 0.97, 0, 2000
    cov = [[1, rho], [rho, 1]]
    for _ in range(trials):
        a, b = rng.multivariate_normal([0, 0], cov, size=48).T
        lo, hi = corr_interval(np.corrcoef(a, b)[0, 1], 48)
        hits += lo <= rho <= hi
    assert 0.93 < hits / trials < 0.97
    assert corr_interval(1.0, 48) is None and corr_interval(0.5, 3) is None and corr_interval(float("nan"), 48) is None


def test_light_agreement_closed_forms():
    rng = np.random.default_rng(1)
    true = torch.tensor(np.stack([rng.uniform(0.3, 0.7, 50), rng.uniform(0.3, 0.8, 50), rng.uniform(-0.8, 0.8, 50),
                                  rng.uniform(-0.8, 0.8, 50)], 1))
    good = Light(true[:, 0] + 0.1, true[:, 1], torch.stack([0.5 * true[:, 2], -true[:, 3]], 1))
    a = light_agreement(good, true)
    assert a["dx_corr"] == pytest.approx(1.0) and a["dx_slope"] == pytest.approx(0.5)
    assert a["dy_corr"] == pytest.approx(-1.0) and a["dy_slope"] == pytest.approx(-1.0)
    assert a["ambient_pred"] == pytest.approx(a["ambient_true"] + 0.1)
    assert a["direction_std_true"] == pytest.approx(float(true[:, 2:].double().std(0, unbiased=False).mean()))
    # a DL that lights every face from one direction (the collapse the report must show)
    flat = Light(torch.full((50,), 0.96), torch.full((50,), 0.86), torch.tensor([[0.05, -0.14]]).repeat(50, 1))
    b = light_agreement(flat, true)
    assert np.isnan(b["dx_corr"]) and b["direction_std_pred"] == 0.0 and b["direction_std_true"] > 0.3


def test_masked_std_matches_numpy():
    x = torch.randn(3, 1, 8, 8)
    m = (torch.rand(3, 1, 8, 8) > 0.4).float()
    ref = [np.std(x[i, 0].numpy()[m[i, 0].numpy() > 0]) for i in range(3)]
    np.testing.assert_allclose(masked_std(x, m).numpy(), ref, rtol=1e-5)


def test_untrained_student_report(tmp_path):
    from digan.data.synth import generate_synth

    teacher = random_teacher(size=64, style_dim=32, width=8, seed=0)
    cfg = make_config("tiny", overrides=["train.w_stats_samples=256"])
    st = Student(build_g3d(cfg, teacher), teacher, cfg)
    generate_synth(tmp_path / "gt", n=4, size=64, seed=3)
    rep = shape_diagnostics(st, tmp_path / "gt", n_faces=4, inversion_steps=2, n_samples=4)
    # zero-initialised depth net: the canonical depth is the prior, whose relief is known in
    # closed form (foreground = depth <= border_depth - 0.01, border columns at border_depth)
    c = (np.arange(64) + 0.5) / 64 * 2 - 1
    yy, xx = np.meshgrid(c, c, indexing="ij")
    d = 1.05 - 0.09 * np.sqrt(np.clip(1 - (xx / 0.5) ** 2 - (yy / 0.75) ** 2, 0, None))
    d[:, :2] = d[:, -2:] = 1.05
    assert rep["relief_std"] == pytest.approx(np.std(d[d <= 1.04]), rel=1e-3)
    assert rep["n_faces"] == 4 and -1 <= rep["pose"]["corr"] <= 1
    for key in ("student", "flat_plane", "prior_only", "prior_posed", "inverted_relief"):
        assert np.isfinite(rep[key]["side"]) and 0 <= rep[key]["mad"] <= 180, key
    # an untrained student's depth is its prior: at DV's pose it is exactly the posed prior,
    # on all its pixels and on the inner face
    assert rep["student"] == rep["prior_posed"] and rep["face"]["student"] == rep["face"]["prior_posed"]
    # ... and so is the depth of the mean code ("one head")
    assert rep["one_head"] == rep["prior_posed"] and rep["face"]["one_head"] == rep["face"]["prior_posed"]
    assert rep["detail"]["corr"] == rep["detail"]["prior_posed_corr"] and rep["detail"]["sigma_px"] == 1.0
    # four views of one identity: the others' mean true head is each face's own true head
    assert rep["mean_true_head"]["mad"] == pytest.approx(rep["true_head"]["mad"], rel=1e-5)
    assert rep["mean_true_head"]["side"] == pytest.approx(rep["true_head"]["side"], rel=1e-4)
    # DV's pitch against the synthetic heads' pitches
    assert -1 <= rep["pitch"]["corr"] <= 1 and rep["pitch"]["true_pitch_std"] > 0
    assert 0 < rep["face"]["pixels"] and np.isfinite(rep["face"]["student"]["mad"])
    assert 0 < rep["light"]["ambient"] < 1 and rep["asymmetry"]["teacher"] > 0
    with pytest.raises(DiganError, match="at least 3"):
        shape_diagnostics(st, tmp_path / "gt", n_faces=2)
    # one identity: the teacher relighting check is skipped, with its reason, not fatal
    assert "at least 3 identities" in rep["teacher_relighting"]["skipped"]


def test_report_has_inversion_psnr_and_roughness_per_face(tmp_path):
    from digan.data.synth import generate_synth

    teacher = random_teacher(size=64, style_dim=32, width=8, seed=0)
    cfg = make_config("tiny", overrides=["train.w_stats_samples=256"])
    st = Student(build_g3d(cfg, teacher), teacher, cfg)
    generate_synth(tmp_path / "gt", n=3, size=64, seed=4)
    rep = shape_diagnostics(st, tmp_path / "gt", n_faces=3, inversion_steps=2, n_samples=4)
    pf = rep["per_face"]
    assert all(len(v) == 3 for v in pf.values())
    assert rep["psnr"]["teacher"] == pytest.approx(np.mean(pf["psnr_teacher"]))
    assert rep["psnr"]["student"] == pytest.approx(np.mean(pf["psnr_student"]))
    assert all(0 < v < 60 for v in pf["psnr_teacher"] + pf["psnr_student"])
    r = rep["roughness"]
    assert r["student"] == pytest.approx(np.mean(pf["roughness"])) and r["ground_truth"] == pytest.approx(np.mean(pf["roughness_gt"]))
    assert r["ratio"] == pytest.approx(r["student"] / r["ground_truth"]) and r["prior_ratio"] == pytest.approx(r["prior_only"] / r["ground_truth"])
    assert all(np.isfinite(v) and v > 0 for v in r.values())


def test_bench_shape_cli_fits_80_columns(tmp_path, capsys, face_models):
    import json

    from digan.cli import main
    from digan.data.synth import generate_synth
    from digan.student.method import BUNDLED_STUDENT

    generate_synth(tmp_path / "gt", n=3, size=64, seed=2)
    rc = main(["bench", "shape", "--student", str(BUNDLED_STUDENT), "--data", str(tmp_path / "gt"), "-n", "3",
               "--inversion-steps", "2", "--threads", "1", "--out", str(tmp_path / "shape.json"), "--figure", str(tmp_path / "side.png"),
               "--figure-faces", "3"])
    assert rc in (0, None)
    assert (tmp_path / "side.png").stat().st_size > 1000 and (tmp_path / "side.pdf").is_file()
    text = capsys.readouterr().out
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert max(len(ln) for ln in lines) <= 80, max(lines, key=len)
    rep = json.loads((tmp_path / "shape.json").read_text())
    head = next(i for i, ln in enumerate(lines) if ln.split()[:1] == ["face"])
    for i in range(3):  # one row per face, its PSNRs as in the JSON (rounded)
        cells = lines[head + 1 + i].split()
        assert cells[0] == str(i) and cells[3] == f"{rep['per_face']['psnr_teacher'][i]:.1f}" and cells[5] == f"{rep['per_face']['psnr_student'][i]:.1f}"
    assert any(ln.startswith("roughness student / GT") and f"{rep['roughness']['ratio']:.2f}x" in ln for ln in lines)
    assert any(ln.startswith("PSNR inversion / render") for ln in lines)
    # the bundled student averages each image's estimate with its mirror image's (model.flip_average)
    assert rep["flip_average"] is True and any(ln.startswith("inversions") and "2 steps, image and mirror, averaged" in ln for ln in lines)
    rc = main(["bench", "shape", "--student", str(BUNDLED_STUDENT), "--data", str(tmp_path / "gt"), "-n", "3", "--relight-faces", "0",
               "--inversion-steps", "2", "--threads", "1", "--out", str(tmp_path / "one.json"), "--single-inversion",
               "--detector", str(face_models / "det_500m.onnx")])
    assert rc in (0, None)
    one = json.loads((tmp_path / "one.json").read_text())
    assert one["flip_average"] is False
    out = capsys.readouterr().out.splitlines()
    assert any(ln.startswith("inversions") and "one per image" in ln for ln in out)
    # --detector: the landmark yaw of the photos and of the teacher's images, in the JSON and the lines
    assert one["landmark_yaw"]["detector"] == "det_500m.onnx" and one["landmark_yaw"]["n_faces"] == 3
    assert any(ln.startswith(("landmark yaw photo / G(w)", "landmark yaw (detector)")) for ln in out)
    # ... and how much yaw the inversion keeps for the photos and for the teacher's own faces
    ts = one["landmark_yaw"]["teacher_samples"]
    assert ts["n_faces"] == 3 and ts["inversion_steps"] == 2 and np.isfinite(ts["psnr"])
    assert any(ln.startswith("yaw kept by inversion") and "G's own" in ln for ln in out)
    assert max(len(ln) for ln in out if ln.strip()) <= 80
    rc = main(["bench", "shape", "--student", str(BUNDLED_STUDENT), "--data", str(tmp_path / "gt"), "--detector", str(tmp_path / "no.onnx")])
    assert rc == 2 and "face detector model not found" in capsys.readouterr().err
    # a figure path that is not a PNG stops before any work, with the fix
    rc = main(["bench", "shape", "--student", str(BUNDLED_STUDENT), "--data", str(tmp_path / "gt"), "--figure", str(tmp_path / "side.jpg")])
    assert rc == 2 and "give a .png path" in capsys.readouterr().err


def test_references_are_scored_on_the_students_pixels(tmp_path):
    """Without a prior (model.depth_prior=none) the prior-only depth is a fronto-parallel plane:
    scored on the student's pixels it must equal the flat-plane reference (SIDE and MAD ignore
    the depth offset; only the prior's 2-pixel border columns, which the untrained student's
    rotated render may cover, differ). Scored on its own mask, as before, it did not."""
    from digan.data.synth import generate_synth

    teacher = random_teacher(size=64, style_dim=32, width=8, seed=0)
    cfg = make_config("tiny", overrides=["train.w_stats_samples=256", "model.depth_prior=none"])
    st = Student(build_g3d(cfg, teacher), teacher, cfg)
    generate_synth(tmp_path / "gt", n=3, size=64, seed=5)
    rep = shape_diagnostics(st, tmp_path / "gt", n_faces=3, inversion_steps=2, n_samples=4)
    assert rep["prior_only"]["side"] == pytest.approx(rep["flat_plane"]["side"], rel=1e-5, abs=1e-9)
    assert rep["prior_only"]["mad"] == pytest.approx(rep["flat_plane"]["mad"], rel=1e-3)
    assert rep["student"] == rep["prior_posed"]


def test_yaw_moment_sign_and_symmetry():
    x = torch.linspace(-1, 1, 16).view(1, 1, 1, 16)
    sym = (1 - x.abs()).expand(2, 3, 16, 16)  # mirror-symmetric: no turn
    np.testing.assert_allclose(yaw_moment(sym), 0.0, atol=1e-7)
    bright_right = (0.5 + 0.5 * x).expand(1, 3, 16, 16)
    m = yaw_moment(bright_right)
    assert m[0] > 0 and yaw_moment(bright_right.flip(3))[0] == pytest.approx(-m[0])
    # closed form: grey - mirror = x, so the moment is mean(x^2)
    assert m[0] == pytest.approx(float((x**2).mean()), rel=1e-5)


def test_report_has_compose_rotation_gain(tmp_path):
    from digan.data.synth import generate_synth

    teacher = random_teacher(size=64, style_dim=32, width=8, seed=0)
    cfg = make_config("tiny", overrides=["train.w_stats_samples=256"])
    st = Student(build_g3d(cfg, teacher), teacher, cfg)
    generate_synth(tmp_path / "gt", n=6, size=64, seed=6)
    rep = shape_diagnostics(st, tmp_path / "gt", n_faces=6, inversion_steps=2, n_samples=4)
    cg = rep["compose_gain"]
    assert -1 <= cg["calibration_corr"] <= 1 and np.isfinite(cg["dv"])
    # below a calibration correlation of 0.3 the image gain is not reported
    assert np.isnan(cg["image"]) == (cg["calibration_corr"] < 0.3)


def test_true_pose_line_is_the_student_when_dv_is_exact(tmp_path):
    """``true_pose`` renders the estimate at the ground truth's rotation: with ground truth whose
    rotation is exactly DV's reading it equals the student's score; turned 25 deg away it differs."""
    from digan.data.synth import generate_synth
    from digan.student.diagnostics import load_eval_faces, reconstruction_report

    teacher = random_teacher(size=64, style_dim=32, width=8, seed=0)
    cfg = make_config("tiny", overrides=["train.w_stats_samples=256"])
    st = Student(build_g3d(cfg, teacher), teacher, cfg)
    generate_synth(tmp_path / "gt", n=3, size=64, seed=4)
    gt, yaw = load_eval_faces(tmp_path / "gt", 3, 64)
    assert gt["rotation"].shape == (3, 3) and np.allclose(gt["rotation"][:, 1].numpy(), yaw)
    # the inversions are deterministic: the report reads the same pose
    rot = st.reconstruct(gt["image"], 2).estimate.view.rotation.clone()
    rep = reconstruction_report(st, dict(gt, rotation=rot), yaw, 2)
    assert rep["true_pose"] == rep["student"]
    rot[:, 1] += 25.0
    off = reconstruction_report(st, dict(gt, rotation=rot), yaw, 2)["true_pose"]
    assert abs(off["mad"] - rep["student"]["mad"]) > 0.5


def test_relighting_fit_recovers_the_light_that_made_a_ratio_and_only_with_those_normals():
    from digan.render.shading import normals_from_depth
    from digan.student.diagnostics import relighting_fit

    # a dome with a bump (a "nose"): its log-ratio under lights dx = +0.5 and -0.7 with
    # ambient / diffuse = 0.6, plus a brightness offset, is explained exactly by its normals
    c = torch.linspace(-1, 1, 48)
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    dome = 1.0 - 0.08 * (1 - xx ** 2 - yy ** 2).clamp(min=0).sqrt() - 0.03 * torch.exp(-(xx ** 2 + (yy + 0.1) ** 2) / 0.02)
    n = normals_from_depth(dome[None, None], 10.0)
    mask = ((xx ** 2 + yy ** 2) < 0.6).float()[None, None]

    def log_shading(dx):
        ld = torch.tensor([dx, 0.0, 1.0])
        ld = ld / ld.norm()
        return (0.6 + (n * ld[None, :, None, None]).sum(1, keepdim=True).clamp(min=0)).log()

    ratio = log_shading(0.5) - log_shading(-0.7) + 0.1
    fit = relighting_fit(ratio, n, mask)
    assert fit["r2"][0] == pytest.approx(1.0, abs=1e-5)
    assert fit["params"][0] == pytest.approx((0.6, 0.5, -0.7), abs=1e-6)
    # flat normals shade every pixel alike: only the offset is fitted, nothing is explained
    flat = torch.zeros_like(n)
    flat[:, 2] = 1
    assert fit_r2(relighting_fit(ratio, flat, mask)) == pytest.approx(0.0, abs=1e-5)
    # the dome without its bump explains less than the normals that made the ratio
    n_smooth = normals_from_depth((1.0 - 0.08 * (1 - xx ** 2 - yy ** 2).clamp(min=0).sqrt())[None, None], 10.0)
    assert fit_r2(relighting_fit(ratio, n_smooth, mask)) < 0.99
    # an empty mask gives NaN, not an error
    assert np.isnan(relighting_fit(ratio, n, torch.zeros_like(mask))["r2"][0])


def fit_r2(fit):
    return fit["r2"][0]


def test_teacher_relighting_real_pair_is_explained_by_its_normals(tmp_path):
    from digan.data.synth import generate_synth
    from digan.student.diagnostics import shape_report_lines, teacher_relighting

    teacher = random_teacher(size=64, style_dim=32, width=8, seed=0)
    cfg = make_config("tiny", overrides=["train.w_stats_samples=256"])
    st = Student(build_g3d(cfg, teacher), teacher, cfg)
    generate_synth(tmp_path / "gt", n=12, size=64, seed=3)  # 4 views each: 3 identities
    rep = teacher_relighting(st, tmp_path / "gt", n_faces=3, inversion_steps=2)
    assert rep["n_faces"] == 3
    # the exact renders: their own normals explain the ratio (up to the grids' steps), the
    # convex prior less, and the fitted light is the one they were lit with
    assert rep["truth"]["true_normals"] > 0.95 > rep["truth"]["prior"]
    # an untrained student's depth is its prior: its normals explain exactly what the prior's do
    assert rep["truth"]["student"] == pytest.approx(rep["truth"]["prior"], abs=1e-6)
    assert rep["truth_dx"] == pytest.approx(0.6, abs=0.1)
    assert -1 <= rep["form_corr"] <= 1 and np.isfinite(rep["psnr"])
    full = shape_diagnostics(st, tmp_path / "gt", n_faces=3, inversion_steps=2, n_samples=4, relight_faces=3)
    assert full["teacher_relighting"]["n_faces"] == 3
    lines = shape_report_lines(full)
    assert any(line.startswith("face form kept by teacher") for line in lines)
    assert any(line.startswith("DV input spread inv./train") for line in lines)
    # the tiny preset's M starts as the identity: an untrained student's w0 is its w
    assert full["neutral_code"]["ratio"] == pytest.approx(1.0) and full["neutral_code"]["own"] == 1.0
    assert f"{'neutral code w0 vs w':28s} spread 1.00x, nearest its own w: 4 of 4" in lines
    older = {k: v for k, v in full.items() if k != "neutral_code"}  # a report written before it existed
    assert not any(line.startswith("neutral code") for line in shape_report_lines(older))
    assert any(line.startswith("render-fit yaw vs true yaw") for line in lines)
    assert any(line.startswith("SIDE / MAD at render-fit yaw") for line in lines)
    assert len(full["per_face"]["fit_yaw"]) == 3 and np.isfinite(full["render_fit_yaw"]["dv_slope"])
    from digan.student.diagnostics import load_eval_faces, reconstruction_report

    gt, yaw = load_eval_faces(tmp_path / "gt", 3, 64)
    quick = reconstruction_report(st, gt, yaw, 2, render_fit=False)  # the training log's pass: no render fit
    assert "render_fit_yaw" not in quick and "fit_pose" not in quick and "fit_yaw" not in quick["per_face"]
    without = {**{k: v for k, v in full.items() if k not in ("render_fit_yaw", "fit_pose")}, **quick}
    assert not any(line.startswith(("render-fit yaw", "SIDE / MAD at render-fit")) for line in shape_report_lines(without))
    # the report says which prior the depth was added to: a student built for training has the
    # sharp one; loaded (use_inference_prior), the tiny preset's 2 px low-pass
    assert full["prior_smooth"] == 0.0 and any(line.startswith("depth prior") and line.endswith("sharp") for line in lines)
    st.g3d.use_inference_prior()
    soft = reconstruction_report(st, gt, yaw, 2, render_fit=False)
    st.g3d.use_inference_prior(False)
    assert soft["prior_smooth"] == 2.0
    assert any(line.startswith("depth prior") and "low-passed by 2 px" in line for line in shape_report_lines({**full, **soft}))
    assert max(len(line) for line in lines) <= 80
    # the inversion's fitted image shift (model.inversion_shift_lr, on by default) is reported
    # against the true one; with it off, no such line
    sh = full["inversion_shift"]
    assert full["inversion_shift_lr"] == 0.15 and sh["true_std_px"] > 0 and -1 <= sh["corr_true"] <= 1
    assert any(line.startswith("image shift") and "lr 0.15" in line for line in lines)
    was, st.cfg.model.inversion_shift_lr = st.cfg.model.inversion_shift_lr, 0.0
    try:
        off = reconstruction_report(st, gt, yaw, 2, render_fit=False)
    finally:
        st.cfg.model.inversion_shift_lr = was
    assert off["inversion_shift_lr"] == 0.0 and "inversion_shift" not in off
    assert not any(line.startswith("image shift") for line in shape_report_lines({**full, **off, "inversion_shift_lr": 0.0}))
    assert "teacher_relighting" not in shape_diagnostics(st, tmp_path / "gt", n_faces=3, inversion_steps=2, n_samples=4,
                                                         relight_faces=0)
    with pytest.raises(DiganError, match="at least 3 identities, got n_faces=2"):
        teacher_relighting(st, tmp_path / "gt", n_faces=2)
    generate_synth(tmp_path / "two", n=8, size=64, seed=3)
    with pytest.raises(DiganError, match="holds 2"):
        teacher_relighting(st, tmp_path / "two", n_faces=3)


def test_profile_views_truth_and_student_share_one_frame(tmp_path, monkeypatch):
    """bench shape --figure: a student whose canonical depth is the true head's shows, at each
    side yaw, the truth's normals (same renderer, frame, yaw sign and pivot), and not the other
    side's; the figure has one row per head and input + truth/student per yaw."""
    from dataclasses import replace

    from digan.data.synth import generate_synth
    from digan.data.synthetic import load_synth
    from digan.student.diagnostics import profile_views
    from evaluate.metrics.depth3d import erode_mask
    from reports.figures import profile_figure

    teacher = random_teacher(size=64, style_dim=32, width=8, seed=0)
    cfg = make_config("tiny", overrides=["train.w_stats_samples=256"])
    st = Student(build_g3d(cfg, teacher), teacher, cfg)
    generate_synth(tmp_path / "gt", n=3, size=64, seed=4)
    data = load_synth(tmp_path / "gt")
    ident = np.asarray(data.arrays["identity"])[:3]
    depth = torch.from_numpy(np.asarray(data.arrays["canonical_depth"])[ident]).float()[:, None]
    mask = torch.from_numpy(np.asarray(data.arrays["canonical_mask"])[ident]).float()[:, None]
    true_depth = torch.where(mask > 0.5, depth, torch.full_like(depth, 1.1))  # behind the student's background plane
    estimate = st.estimate
    monkeypatch.setattr(st, "estimate", lambda w, *a, **k: replace(estimate(w, *a, **k), depth=true_depth))
    prof = profile_views(st, tmp_path / "gt", n_faces=3, yaws=(-60.0, 60.0), inversion_steps=1, flip_average=False)
    assert prof["yaws"] == [-60.0, 60.0] and len(prof["true_yaw"]) == 3 and prof["image"].shape == (3, 3, 64, 64)

    def agreement(a, b):  # mean cosine of the normals on both heads' (eroded) pixels
        m = erode_mask(a[1] * b[1])[:, 0] > 0.5
        return float((a[0] * b[0]).sum(1)[m].mean()), int(m.sum())

    for k in range(2):
        same, px = agreement(prof["student"][k], prof["truth"][k])
        other, _ = agreement(prof["student"][k], prof["truth"][1 - k])
        assert px > 300 and same > 0.97 and other < same - 0.1, (k, same, other)
    fig = profile_figure(prof, label="s")
    assert fig is not None
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_code_spread_against_closed_form():
    """``code_spread`` compares the codes DV reads with the ones it was trained on: the training
    codes themselves give exactly 1x, the same codes pushed twice as far from DV's standardising
    mean exactly 2x, and the teacher's mean code 0."""
    from digan.student.diagnostics import code_spread

    teacher = random_teacher(size=64, style_dim=32, width=8, seed=0)
    cfg = make_config("tiny", overrides=["train.w_stats_samples=256"])
    st = Student(build_g3d(cfg, teacher), teacher, cfg)
    ref = st.style(st.latents(1024, seed=0))
    same = code_spread(st, ref)
    assert same["ratio"] == pytest.approx(1.0, abs=1e-6) and same["truncation"] == pytest.approx(0.7)
    m = st.g3d.view_net.w_mean
    assert code_spread(st, m + 2 * (ref - m))["ratio"] == pytest.approx(2.0, rel=1e-5)
    assert code_spread(st, m.expand(4, -1))["inverted"] == pytest.approx(0.0, abs=1e-6)
    # untruncated samples spread further than the truncated ones DV was trained on
    assert code_spread(st, st.style(st.latents(1024, seed=1), 1.0))["ratio"] > 1.2


def test_render_fit_yaw_recovers_the_yaw_a_render_was_made_at():
    """``render_fit_yaw`` reads back the yaw of the student's own renders, on the grid and between
    grid points (the parabola) within a fraction of a step, beyond the grid its end; the
    rest of the view (DV's pitch, roll, translation) and the light are held as rendered."""
    from dataclasses import replace

    from digan.render.types import View
    from digan.student.diagnostics import render_fit_yaw

    teacher = random_teacher(size=64, style_dim=32, width=8, seed=0)
    cfg = make_config("tiny", overrides=["train.w_stats_samples=256"])
    st = Student(build_g3d(cfg, teacher), teacher, cfg)
    with torch.no_grad():
        est = st.estimate(st.style(st.latents(5, seed=2)))
        yaws = torch.tensor([-24.0, 0.0, 13.3, 37.0, 75.0])
        rot = est.view.rotation.clone()
        rot[:, 1] = yaws
        target = st.g3d.render(replace(est, view=View(rot, est.view.translation)), st.renderer, filter_grads=False).image
    fit = render_fit_yaw(st, est, target)
    # on the 2-degree grid: the grid point, moved by the parabola a small fraction of a step
    assert fit[[0, 1, 3]] == pytest.approx([-24.0, 0.0, 37.0], abs=0.1)
    assert fit[2] == pytest.approx(13.3, abs=0.5)
    assert fit[4] == 60.0  # beyond the candidates: the last one, no extrapolation
    # a coarser grid still brackets the off-grid yaw between its neighbours
    coarse = render_fit_yaw(st, est, target, yaws=tuple(float(y) for y in range(-60, 61, 10)))
    assert 10.0 <= coarse[2] <= 20.0
    with pytest.raises(DiganError, match="at least 3 increasing"):
        render_fit_yaw(st, est, target, yaws=(0.0, 10.0))


def test_one_head_is_the_student_only_when_its_depth_is_the_same_for_every_face(tmp_path, monkeypatch):
    """``one_head`` gives every face the student's depth of the teacher's mean code: a student whose
    depth does not depend on the code scores exactly that; one whose depth varies does not."""
    from dataclasses import replace

    from digan.data.synth import generate_synth
    from digan.student.diagnostics import load_eval_faces, reconstruction_report

    teacher = random_teacher(size=64, style_dim=32, width=8, seed=0)
    cfg = make_config("tiny", overrides=["train.w_stats_samples=256"])
    torch.manual_seed(0)
    st = Student(build_g3d(cfg, teacher), teacher, cfg)
    with torch.no_grad():
        for p in st.g3d.depth_net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    generate_synth(tmp_path / "gt", n=3, size=64, seed=4)
    gt, yaw = load_eval_faces(tmp_path / "gt", 3, 64)
    rep = reconstruction_report(st, gt, yaw, 2, render_fit=False)
    assert rep["one_head"] != rep["student"] and np.isfinite(rep["one_head"]["mad"])
    estimate = st.estimate
    fixed = estimate(teacher.w_mean.reshape(1, -1)).depth
    fixed = (fixed + fixed.flip(3)) / 2  # symmetric, as mirror averaging makes the one head
    monkeypatch.setattr(st, "estimate", lambda w: replace(estimate(w), depth=fixed.expand(w.shape[0], -1, -1, -1)))
    rep = reconstruction_report(st, gt, yaw, 2, render_fit=False)
    assert rep["one_head"] == rep["student"] and rep["face"]["one_head"] == rep["face"]["student"]


def test_true_head_references_score_the_ground_truth_at_dv_pose(tmp_path, monkeypatch):
    """``true_head`` renders each face's true canonical depth at DV's pose: a student whose depth is
    exactly that truth (and has no T map) scores the same, to the last bit; ``mean_true_head``
    (the other faces' mean head) then scores worse, and a student without the truth worse still."""
    from dataclasses import replace

    from digan.data.synth import generate_synth
    from digan.student.diagnostics import load_eval_faces, reconstruction_report, shape_report_lines

    teacher = random_teacher(size=64, style_dim=32, width=8, seed=0)
    # no fitted image shift: the view below is exactly the one given
    cfg = make_config("tiny", overrides=["train.w_stats_samples=256", "model.inversion_shift_lr=0"])
    torch.manual_seed(0)
    st = Student(build_g3d(cfg, teacher), teacher, cfg)
    generate_synth(tmp_path / "gt", n=12, size=64, seed=4)  # 3 identities, 4 views each
    gt, yaw = load_eval_faces(tmp_path / "gt", 12, 64)
    idx = torch.tensor([0, 4, 8])  # one view of each identity
    gt = {k: v[idx] for k, v in gt.items()}
    yaw = yaw[idx.numpy()]
    assert not torch.equal(gt["canonical_depth"][0], gt["canonical_depth"][1])
    prior = reconstruction_report(st, gt, yaw, 2, render_fit=False, flip_average=False)
    estimate = st.estimate
    truth = gt["canonical_depth"]
    from digan.render.types import View

    def true_shape_and_pose(w):
        e = estimate(w)
        return replace(e, depth=truth, transform_map=None, view=View(gt["rotation"], torch.zeros_like(e.view.translation)))

    monkeypatch.setattr(st, "estimate", true_shape_and_pose)
    rep = reconstruction_report(st, gt, yaw, 2, render_fit=False, flip_average=False)
    assert rep["student"] == rep["true_head"] and rep["pitch"]["corr"] == pytest.approx(1.0)
    # at the true pose the truth is near the metric's floor (12 deg measured); the others' mean head
    # is worse (16), an untrained student far worse (65)
    assert rep["true_head"]["mad"] < 15 and rep["true_head"]["mad"] + 2 < rep["mean_true_head"]["mad"] < prior["student"]["mad"]
    text = "\n".join(shape_report_lines({**rep, "inversion_steps": 2, "asymmetry": {"canonical": 0.1, "teacher": 0.1},
                                         "light": {"ambient": 0.5, "diffuse": 0.5}, "relief_std": 0.01}))
    assert "mean GT head, DV pose" in text and "DV pitch vs true pitch" in text
    # the nose, in the canonical frame: the truth's own depth stands out exactly as the truth's;
    # the untrained student's is its prior's, a small part of the truth's
    assert rep["nose"]["student_ratio"] == 1.0 and rep["nose"]["truth"] > 0.005 and rep["nose"]["faces"] == 3
    assert prior["nose"]["student"] == prior["nose"]["prior"] == prior["nose"]["one_head"]
    assert 0 <= prior["nose"]["student_ratio"] < 0.5
    assert "nose protrusion / GT's" in text and "1.00x" in text
    # the view was given no shift: none follows the yaw; the truth's spread is the set's own
    assert rep["shift"]["per_10deg"] == 0 and rep["shift"]["pred_std"] == 0
    assert rep["shift"]["true_std"] == pytest.approx(float(gt["translation"][:, 0].double().std(unbiased=False)))
    assert "DV x shift vs DV yaw" in text and "+0.0000/10 deg" in text
    # a set without canonical depths: no ground-truth references, the rest stands
    rep = reconstruction_report(st, {k: v for k, v in gt.items() if k != "canonical_depth"}, yaw, 2, render_fit=False, flip_average=False)
    assert "true_head" not in rep and "mean_true_head" not in rep and "nose" not in rep and np.isfinite(rep["student"]["mad"])


def test_landmark_yaw_check_says_whose_yaw_dv_follows(tmp_path, face_models):
    """bench shape --detector: the detector's yaw of the photos and of the 'teacher images' (here
    the photos mirrored: a flip negates the turn) scored against the true yaw as the pipeline
    reads them; a DV whose error is a multiple of the photos' reading error follows the photos
    exactly (+1) and the mirrors as much as their residuals agree; images with no face are
    flagged as too few, with NaN numbers; the report's lines fit 80 columns."""
    from digan.data.synth import generate_synth
    from digan.faces.pipeline import FacePipeline
    from digan.student.diagnostics import landmark_yaw_check, load_eval_faces, pose_agreement

    generate_synth(tmp_path / "gt", n=12, size=64, seed=11)
    gt, yaw = load_eval_faces(tmp_path / "gt", 12, 64)
    det = face_models / "det_500m.onnx"
    pipe = FacePipeline(detector=str(det), recognizer=False)
    y_photo = pipe.analyze(gt["image"], embed=False).yaw
    y_flip = pipe.analyze(gt["image"].flip(3), embed=False).yaw
    ok = np.isfinite(y_photo) & np.isfinite(y_flip)
    assert ok.sum() >= 10  # the synthetic heads are faces the detector reads

    def res(y):
        a, b = np.polyfit(yaw[ok], y[ok], 1)
        return y - (a * yaw + b)

    r_photo = np.where(ok, res(np.nan_to_num(y_photo)), 0.0)
    dv = yaw + 3.0 * r_photo  # DV's error: three times the photo reading's
    rep = landmark_yaw_check(gt["image"], gt["image"].flip(3), dv, yaw, det)
    assert rep["found"] == int(ok.sum()) and not rep["too_few"]
    want = pose_agreement(y_photo[ok], yaw[ok])
    assert rep["photo"]["corr"] == pytest.approx(want["corr"]) and rep["photo"]["slope"] == pytest.approx(want["slope"])
    assert rep["photo"]["corr"] > 0.9 and rep["teacher_image"]["slope"] < -0.8  # the mirrors turn the other way
    assert rep["dv_follows"]["photo"] == pytest.approx(1.0, abs=1e-9)
    want_mirror = np.corrcoef(res(np.nan_to_num(y_flip))[ok], r_photo[ok])[0, 1]
    assert rep["dv_follows"]["teacher_image"] == pytest.approx(want_mirror, abs=1e-9)
    blank = torch.zeros_like(gt["image"])  # no face anywhere
    none = landmark_yaw_check(gt["image"], blank, dv, yaw, det)
    assert none["too_few"] and none["found"] == 0 and np.isnan(none["photo"]["corr"]) and np.isnan(none["dv_follows"]["photo"])
    from digan.student.diagnostics import _landmark_lines

    lines = _landmark_lines(rep) + _landmark_lines(none)
    assert lines[0][0] == "landmark yaw photo / G(w)" and "too few faces found (0 of 12)" in _landmark_lines(none)[0][1]
    # no teacher samples in a direct call; the photos' kept yaw is the mirrors' (negated)
    assert rep["kept"]["slope"] < -0.8 and lines[2][1].startswith(f"photo {rep['kept']['corr']:+.2f} (")
    assert lines[2][1].endswith("G's own n/a") and lines[-1] == ("yaw kept by inversion", "photo too few found, G's own n/a")
    assert lines[1][1].startswith("photo's +1.00, G(w)'s")
    assert all(len(f"{a:28s} {b}") <= 80 for a, b in lines)


def test_yaw_kept_scores_found_faces_and_flags_too_few():
    """yaw_kept: corr and slope of the inverted images' yaw on the sources' (closed form: an exact
    half-scale copy has corr 1, slope 0.5), over the faces read on both; too few read -> NaN, flagged."""
    from digan.student.diagnostics import yaw_kept

    src = np.array([-30.0, -10.0, 0.0, 12.0, 25.0, np.nan])
    back = np.array([-15.0, -5.0, 0.0, 6.0, np.nan, 3.0])
    k = yaw_kept(src, back)
    assert k["found"] == 4 and not k["too_few"]
    assert k["corr"] == pytest.approx(1.0) and k["slope"] == pytest.approx(0.5)
    few = yaw_kept(src, np.array([1.0, np.nan, np.nan, np.nan, 2.0, 3.0]))
    assert few["found"] == 2 and few["too_few"] and np.isnan(few["corr"]) and np.isnan(few["slope"])


def test_inversion_pose_ceiling_tells_a_working_inversion_from_a_stalled_one(face_models):
    """The teacher's own faces, inverted back as a photo is: with the inversion's steps they come
    back nearly whole and the detector reads the same yaw (the optimiser can keep a pose); with
    one step the codes stay near the mean face, the yaw is lost and the check says so."""
    from digan.student.diagnostics import inversion_pose_ceiling
    from digan.student.method import BUNDLED_STUDENT

    torch.manual_seed(0)
    st = Student.load(BUNDLED_STUDENT, device="cpu")
    det = face_models / "det_500m.onnx"
    good = inversion_pose_ceiling(st, 8, 60, det, seed=3)
    assert good["found"] >= 6 and not good["too_few"] and good["source_yaw_std"] > 5
    assert good["psnr"] > 30 and good["corr"] > 0.95 and 0.8 < good["slope"] < 1.2
    stalled = inversion_pose_ceiling(st, 8, 1, det, seed=3)
    assert stalled["psnr"] < good["psnr"] - 10
    assert stalled["too_few"] or abs(stalled["slope"]) < 0.5


def test_shape_report_with_a_detector_opens_it_once(tmp_path, face_models, monkeypatch):
    """bench shape --detector: the landmark check of the photos and the inversion ceiling of the
    teacher's own faces share one ONNX session; an open FaceDetector passed to the check gives
    the same readings as its file, and the report names the file either way."""
    from digan.data.synth import generate_synth
    from digan.faces import detector as detmod
    from digan.student.diagnostics import landmark_yaw_check, load_eval_faces, reconstruction_report
    from digan.student.method import BUNDLED_STUDENT

    generate_synth(tmp_path / "gt", n=6, size=64, seed=12)
    gt, yaw = load_eval_faces(tmp_path / "gt", 6, 64)
    det = face_models / "det_500m.onnx"
    opened = []
    real_init = detmod.FaceDetector.__init__

    def counting_init(self, *a, **k):
        opened.append(1)
        real_init(self, *a, **k)

    monkeypatch.setattr(detmod.FaceDetector, "__init__", counting_init)
    st = Student.load(BUNDLED_STUDENT, device="cpu")
    rep = reconstruction_report(st, gt, yaw, 2, render_fit=False, detector=det)
    assert len(opened) == 1
    ly = rep["landmark_yaw"]
    assert ly["detector"] == "det_500m.onnx" and ly["n_faces"] == 6 and ly["teacher_samples"]["n_faces"] == 6
    opened.clear()
    open_det = detmod.FaceDetector(det)
    a = landmark_yaw_check(gt["image"], gt["image"].flip(3), yaw, yaw, open_det)
    b = landmark_yaw_check(gt["image"], gt["image"].flip(3), yaw, yaw, det)
    assert len(opened) == 2 and a["detector"] == b["detector"] == "det_500m.onnx"
    assert a["per_face"] == b["per_face"] and a["found"] == b["found"] >= 3


def test_neutral_code_spread_tells_a_kept_identity_from_a_collapsed_one():
    """Closed forms: w0 = w keeps everything (ratio 1, every face nearest its own code); w0 =
    half-way to the mean has ratio 0.5; w0 = w plus a little noise keeps every face; w0 = the mean plus a tiny
    shared jitter is the collapse (ratio ~0, own at chance); bad shapes get a one-line error
    (the report's line is checked in test_teacher_relighting_real_pair_is_explained_by_its_normals)."""
    from digan.student.diagnostics import neutral_code_spread

    g = torch.Generator().manual_seed(0)
    w = torch.randn(32, 16, generator=g) * 2 + 1
    same = neutral_code_spread(w, w.clone())
    assert same["ratio"] == pytest.approx(1.0) and same["own"] == 1.0 and same["n"] == 32
    half = neutral_code_spread(w, 0.5 * (w - w.mean(0)) + w.mean(0))
    assert half["ratio"] == pytest.approx(0.5)  # (pulled to the mean, some land nearer a central face)
    near = neutral_code_spread(w, w + 0.05 * torch.randn(32, 16, generator=g))
    assert near["ratio"] == pytest.approx(1.0, abs=0.05) and near["own"] == 1.0
    one = neutral_code_spread(w, w.mean(0).expand(32, -1) + 1e-3 * torch.randn(32, 16, generator=g))
    assert one["ratio"] < 0.01 and one["own"] <= 4 / 32
    for a, b in ((w[:1], w[:1]), (w, w[:, :8]), (w[0], w[0])):  # one face, unequal shapes, no batch
        with pytest.raises(DiganError, match="neutral_code_spread needs"):
            neutral_code_spread(a, b)

