"""View calibration (``digan-bench calibrate-view``, :mod:`digan.student.calibrate`) and the
``train.trainable`` switch it rests on, on a small randomly initialised teacher."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from digan.errors import DiganError
from digan.student.calibrate import CALIBRATION_OVERRIDES, CalibrationSettings, calibrate_view, calibration_config
from digan.student.config import make_config
from digan.student.inference import Student
from digan.student.losses import photometric_loss
from digan.student.model import make_renderer, teacher_synthesis
from digan.student.testing import random_teacher
from digan.student.train import train
from digan.utils.io import load_torch

pytestmark = [pytest.mark.filterwarnings("ignore:VGG16 weights not found"), pytest.mark.filterwarnings("ignore:no torch face recogniser")]


@pytest.fixture(scope="module")
def teacher():
    return random_teacher(size=32, style_dim=32, width=16, seed=0)


def _cfg(*extra):
    return make_config("tiny", overrides=["train.w_stats_samples=512", "train.batch=4", "train.log_every=1", "train.threads=1",
                                          "loss.identity=0", "train.depth_warmup=0", *extra])


@pytest.fixture(scope="module")
def base(teacher, tmp_path_factory):
    """A student trained for a few steps (every sub-network has moved from its initialisation)."""
    out = tmp_path_factory.mktemp("base") / "run"
    train(_cfg("train.steps=4", "train.lr=1e-3", "train.ckpt_every=4", "train.grid_every=4"), out, teacher=teacher, show_progress=False)
    return out / "student.pt"


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    """A folder of 6 'real' 32 px images (a data set's images/ subfolder)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("real")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "images" / f"{i:03d}.png")
    return root


def _split(state: dict[str, torch.Tensor], prefix: str) -> tuple[dict, dict]:
    stats = ("w_mean", "w_std", "w_sigma_inv")
    inside = {k: v for k, v in state.items() if k.startswith(prefix)}
    outside = {k: v for k, v in state.items() if not k.startswith(prefix) and not k.endswith(stats)}
    return inside, outside


def test_trainable_holds_every_other_subnetwork(teacher, base, tmp_path):
    """train.trainable=[view_net] from a checkpoint: every weight outside DV is bit-identical to
    the checkpoint's after training, DV's have moved; an unknown name is a one-line error."""
    cfg = _cfg("train.steps=3", "train.lr=1e-3", "train.trainable=[view_net]", "train.ckpt_every=3", "train.grid_every=3")
    cfg.train.init_from = str(base)
    train(cfg, tmp_path / "a", teacher=teacher, show_progress=False)
    before, after = load_torch(base)["state"], load_torch(tmp_path / "a" / "student.pt")["state"]
    dv_before, rest_before = _split(before, "view_net.")
    dv_after, rest_after = _split(after, "view_net.")
    assert rest_before.keys() == rest_after.keys() and len(rest_before) > 20
    for k in rest_before:
        assert torch.equal(rest_before[k], rest_after[k]), k
    assert any(not torch.equal(dv_before[k], dv_after[k]) for k in dv_before)
    # the same steps with everything trainable move the depth net too (the test above can fail)
    cfg_all = _cfg("train.steps=3", "train.lr=1e-3", "train.ckpt_every=3", "train.grid_every=3")
    cfg_all.train.init_from = str(base)
    train(cfg_all, tmp_path / "b", teacher=teacher, show_progress=False)
    moved = load_torch(tmp_path / "b" / "student.pt")["state"]
    assert any(not torch.equal(before[k], moved[k]) for k in before if k.startswith("depth_net."))
    with pytest.raises(DiganError, match="no sub-network 'nose_net'; choose from: .*view_net"):
        train(_cfg("train.steps=1", "train.trainable=[nose_net]"), tmp_path / "c", teacher=teacher, show_progress=False)
    with pytest.raises(DiganError, match="expected a list"):
        _cfg("train.trainable=view_net")


def _rec_on(student: Student, w: torch.Tensor) -> float:
    """The photometric loss of the student's render at DV's view against the teacher's image of w."""
    r = make_renderer(student.cfg, student.g3d.size)
    with torch.no_grad():
        target = teacher_synthesis(student.teacher, w, features=False)[0].clamp(-1, 1)
        est = student.g3d.estimate(w, student.teacher)
        return photometric_loss(student.g3d.render(est, r, filter_grads=False).image, target).item()


def test_calibrate_view_trains_dv_alone_on_inverted_heads(teacher, base, heads, tmp_path):
    """A calibration run starts from the student, inverts the heads once (cached), trains only DV
    with the reconstruction (and flip) loss, so the render at DV's view fits the teacher's
    images of the inverted codes better; the rest of the student is the student's; the config
    records what was done; rerunning resumes (nothing more to do)."""
    # the pose anchor off: random images show no face to read a pose from (its own test below)
    settings = CalibrationSettings(steps=30, lr=3e-3, fraction=1.0, n=4, inversion_steps=3, pose_anchor=0, pose_anchor_pitch=0)
    # the flip term off: this random teacher's canonical faces are far from mirror-symmetric, so
    # with it DV would trade reconstruction for the flip's fit (on the bundled student both fall)
    extra = ["train.batch=4", "loss.flip=0"]
    res = calibrate_view(base, heads, tmp_path / "cal", teacher=teacher, settings=settings, overrides=extra, show_progress=False)
    assert res.steps == 30 and res.student_path.is_file()
    cfg = json.loads((tmp_path / "cal" / "config.json").read_text())
    assert cfg["train"]["trainable"] == ["view_net"] and cfg["train"]["init_from"] == str(base)
    assert cfg["train"]["inverted_data"] == str(heads) and cfg["train"]["inverted_fraction"] == 1.0
    assert all(cfg["loss"][k] == 0 for k in ("perturb", "cycle", "identity", "w_reg", "albedo", "canonical_symmetry",
                                             "landmark_parallax"))
    assert cfg["loss"]["rec"] > 0
    from digan.utils.io import sha256_file

    run = json.loads((tmp_path / "cal" / "run.json").read_text())
    assert run["weights"]["init_from"] == "file:" + sha256_file(base)  # which student was calibrated, by hash
    bank = load_torch(tmp_path / "cal" / "inverted_codes.pt")["codes"]
    assert bank.shape == (8, 32)  # 4 heads, then their mirrors (train.inverted_mirror, the default)

    ck, ck0 = load_torch(res.student_path), load_torch(base)
    assert ck["config"] == ck0["config"]  # the student's own model and objective, not the calibration's
    rec = ck["view_calibration"]
    assert rec["train"]["trainable"] == ["view_net"] and rec["loss"]["perturb"] == 0 and rec["steps"] == 30
    assert rec["from"]["sha256"] == run["weights"]["init_from"]
    s0, s1 = Student.load(base, teacher=teacher), Student.load(res.student_path, teacher=teacher)
    assert s1.cfg.loss.perturb == s0.cfg.loss.perturb > 0
    _, rest0 = _split(load_torch(base)["state"], "view_net.")
    _, rest1 = _split(load_torch(res.student_path)["state"], "view_net.")
    for k in rest0:
        assert torch.equal(rest0[k], rest1[k]), k
    before, after = _rec_on(s0, bank), _rec_on(s1, bank)
    assert after < 0.8 * before, (before, after)
    e0, e1 = s0.g3d.estimate(bank, teacher), s1.g3d.estimate(bank, teacher)
    torch.testing.assert_close(e0.depth, e1.depth)  # the shape is the student's; only the view moved
    assert not torch.allclose(e0.view_raw, e1.view_raw)

    again = calibrate_view(base, heads, tmp_path / "cal", teacher=teacher, settings=settings, overrides=extra, show_progress=False)
    assert again.resumed_from == 30 and again.steps == 30
    assert load_torch(res.student_path)["config"] == ck0["config"] and "view_calibration" in load_torch(res.student_path)
    from digan.student.train import package_student

    _, js = package_student(tmp_path / "cal", tmp_path / "pkg" / "s.pt", command="digan-bench calibrate-view ...")
    prov = json.loads(js.read_text())
    assert prov["config"] == ck0["config"] and prov["view_calibration"]["train"]["trainable"] == ["view_net"]


def test_model_settings_given_to_a_calibration_are_the_calibrated_students(teacher, base, heads, tmp_path):
    """calibrate-view --set model.X=...: the calibrated student.pt records the model setting it was
    calibrated with (here an inference option), and keeps the rest of the student's config."""
    settings = CalibrationSettings(steps=2, lr=3e-3, fraction=1.0, n=4, inversion_steps=1, pose_anchor=0, pose_anchor_pitch=0)
    res = calibrate_view(base, heads, tmp_path / "cal", teacher=teacher, settings=settings,
                         overrides=["train.batch=4", "model.flip_average=false"], show_progress=False)
    ck, ck0 = load_torch(res.student_path), load_torch(base)
    assert ck0["config"]["model"]["flip_average"] is True and ck["config"]["model"]["flip_average"] is False
    ck["config"]["model"]["flip_average"] = True
    assert ck["config"] == ck0["config"]
    assert Student.load(res.student_path, teacher=teacher).cfg.model.flip_average is False


def test_calibration_config_and_its_errors(base, heads, tmp_path):
    # a student trained with --eval-data elsewhere (the bundled ones: data/tune64) calibrates without those heads
    ck = load_torch(base)
    ck["config"]["train"]["eval_data"] = str(tmp_path / "not_here")
    # and one trained with the landmark parallax (the bundled ones): a term that trains the
    # depth, which a calibration holds, is off in the calibration
    ck["config"]["loss"]["landmark_parallax"] = 0.3
    torch.save(ck, tmp_path / "with_eval.pt")
    held = calibration_config(tmp_path / "with_eval.pt", heads)
    assert held.train.eval_data is None and held.loss.landmark_parallax == 0
    cfg = calibration_config(base, heads, CalibrationSettings(steps=7, lr=1e-4, fraction=0.25))
    own = load_torch(base)["config"]
    assert cfg.train.steps == 7 and cfg.train.lr == 1e-4 and cfg.train.inverted_fraction == 0.25
    assert cfg.loss.pose_anchor == cfg.loss.pose_anchor_pitch == 10 and cfg.train.pose_detector is None  # the defaults
    det = calibration_config(base, heads, CalibrationSettings(pose_anchor=0, pose_anchor_pitch=2, detector="my/det.onnx"))
    assert det.loss.pose_anchor == 0 and det.loss.pose_anchor_pitch == 2 and det.train.pose_detector == "my/det.onnx"
    assert cfg.model.depth_nf == own["model"]["depth_nf"] and cfg.loss.flip == own["loss"]["flip"]  # the student's own model
    assert cfg.train.depth_warmup == 0 and cfg.train.trainable == ["view_net"] and "train.trainable=[view_net]" in CALIBRATION_OVERRIDES
    assert calibration_config(base, heads, overrides=["train.trainable=[view_net, light_net]"]).train.trainable == ["view_net", "light_net"]
    with pytest.raises(DiganError, match="not found; pass the student.pt"):
        calibration_config(tmp_path / "none.pt", heads)
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(DiganError, match="not a digan-bench student checkpoint"):
        calibration_config(tmp_path / "other.pt", heads)
    for bad in (CalibrationSettings(fraction=0.0), CalibrationSettings(steps=0), CalibrationSettings(lr=0.0),
                CalibrationSettings(pose_anchor=-1.0), CalibrationSettings(pose_anchor_pitch=float("nan"))):
        with pytest.raises(DiganError, match="out of range"):
            calibration_config(base, heads, bad)


def test_pose_anchor_pulls_dv_toward_the_detector_pose(teacher, base, heads, tmp_path, monkeypatch):
    """loss.pose_anchor: in a calibration run, DV's (pitch, yaw) on the inverted codes is pulled
    toward the pose the detector read on each image (here fixed angles stand in for the
    detector), the term is logged, and the rest of the student stays the student's; without
    train.inverted_data the anchor is a one-line error."""
    import digan.student.train as T

    want = torch.tensor([[8.0, -25.0], [8.0, -25.0], [8.0, -25.0], [float("nan"), float("nan")]])
    monkeypatch.setattr(T, "inverted_face_readings",
                        lambda cfg, teacher, out: {"angles": want, "kps": torch.full((4, 5, 2), float("nan")), "detector": None})
    settings = CalibrationSettings(steps=40, lr=3e-3, fraction=1.0, n=4, inversion_steps=2, mirror=False)
    extra = ["train.batch=4", "loss.flip=0", "loss.rec=0.1", "loss.pose_anchor=20", "loss.pose_anchor_pitch=20"]
    res = calibrate_view(base, heads, tmp_path / "cal", teacher=teacher, settings=settings, overrides=extra, show_progress=False)
    bank = load_torch(tmp_path / "cal" / "inverted_codes.pt")["codes"][:3]
    s0, s1 = Student.load(base, teacher=teacher), Student.load(res.student_path, teacher=teacher)
    r0, r1 = (s.g3d.view_net.to_view(s.g3d.estimate(bank, teacher).view_raw).rotation[:, :2].detach() for s in (s0, s1))
    err0, err1 = (r0 - want[:3]).abs().mean(0), (r1 - want[:3]).abs().mean(0)
    assert (err1 < 0.3 * err0).all(), (err0, err1)
    losses = (tmp_path / "cal" / "losses.csv").read_text().splitlines()
    assert "pose_anchor" in losses[0].split(",")
    assert load_torch(res.student_path)["view_calibration"]["loss"]["pose_anchor"] == 20
    _, rest0 = _split(load_torch(base)["state"], "view_net.")
    _, rest1 = _split(load_torch(res.student_path)["state"], "view_net.")
    assert all(torch.equal(rest0[k], rest1[k]) for k in rest0)
    with pytest.raises(DiganError, match="loss.pose_anchor needs train.inverted_data"):
        train(_cfg("train.steps=1", "loss.pose_anchor=1"), tmp_path / "no_bank", teacher=teacher, show_progress=False)


def test_landmark_parallax_trains_the_depth_on_the_inverted_heads(teacher, base, heads, tmp_path, monkeypatch):
    """loss.landmark_parallax: with the depth net alone trainable, the term (fed keypoints that
    stand in for the detector's: a nose tip well beside the eyes' midpoint, and a missed face)
    is logged and falls, and it moves the depth net alone; without train.inverted_data it is a
    one-line error."""
    import csv

    import digan.student.train as T

    kp = torch.tensor([[10.0, 12.0], [22.0, 12.0], [19.0, 18.0], [11.0, 23.0], [21.0, 23.0]])
    want = torch.stack([kp, kp, kp, torch.full_like(kp, float("nan"))])
    monkeypatch.setattr(T, "inverted_face_readings",
                        lambda cfg, teacher, out: {"angles": torch.full((4, 2), float("nan")), "kps": want, "detector": None})
    settings = CalibrationSettings(steps=30, lr=3e-3, fraction=1.0, n=4, inversion_steps=2, pose_anchor=0, pose_anchor_pitch=0,
                                   mirror=False)
    extra = ["train.batch=4", "train.trainable=[depth_net]", "loss.rec=0.01", "loss.flip=0", "loss.landmark_parallax=1"]
    res = calibrate_view(base, heads, tmp_path / "cal", teacher=teacher, settings=settings, overrides=extra, show_progress=False)
    rows = list(csv.DictReader(open(tmp_path / "cal" / "losses.csv")))
    lp = [float(r["landmark_parallax"]) for r in rows]
    assert lp[0] > 0.3 and np.mean(lp[-5:]) < 0.5 * lp[0], lp
    moved, rest0 = _split(load_torch(base)["state"], "depth_net.")
    moved1, rest1 = _split(load_torch(res.student_path)["state"], "depth_net.")
    assert all(torch.equal(rest0[k], rest1[k]) for k in rest0)
    assert any(not torch.equal(moved[k], moved1[k]) for k in moved)
    with pytest.raises(DiganError, match="loss.landmark_parallax needs train.inverted_data"):
        train(_cfg("train.steps=1", "loss.landmark_parallax=1"), tmp_path / "no_bank", teacher=teacher, show_progress=False)


def test_inverted_pose_anchors_are_the_detector_pose(face_models, shared_data, tmp_path):
    """The anchors are the landmark pose (pitch, yaw) the face pipeline reads on the first
    inverted_n images, NaN where no face is found; cached with the detector's hash; a folder
    where the detector finds too few faces is a one-line error."""
    from types import SimpleNamespace

    from PIL import Image

    from digan.faces.pipeline import FacePipeline
    from digan.student.train import inverted_face_readings
    from digan.teacher.data import ImageFolderData
    from digan.utils.io import save_torch

    imgs = tmp_path / "real" / "images"
    imgs.mkdir(parents=True)
    photos = sorted((shared_data / "faces" / "celeba_aligned").glob("*.jpg"))[:5]
    for i, p in enumerate(photos):
        Image.open(p).convert("RGB").resize((64, 64), Image.BICUBIC).save(imgs / f"{i:03d}.png")
    Image.fromarray(np.full((64, 64, 3), 128, dtype=np.uint8)).save(imgs / "005.png")  # no face
    det = str(face_models / "det_500m.onnx")
    cfg = _cfg(f"train.inverted_data={imgs.parent}", "train.inverted_n=6", f"train.pose_detector={det}")
    fake_teacher = SimpleNamespace(size=64)

    def inverted_pose_anchors(*a):
        return inverted_face_readings(*a)["angles"]

    def inverted_keypoints(*a):
        return inverted_face_readings(*a)["kps"]

    got = inverted_pose_anchors(cfg, fake_teacher, tmp_path / "run")
    ref = FacePipeline(detector=det, recognizer=False).analyze(ImageFolderData(imgs, mirror=False, cache_gb=0).load(list(range(6))),
                                                               embed=False)
    assert got.shape == (6, 2) and torch.isnan(got[5]).all() and torch.isfinite(got[:5]).all()
    np.testing.assert_allclose(got[:5].numpy(), np.stack([ref.pitch, ref.yaw], 1)[:5], atol=1e-4)
    assert (tmp_path / "run" / "pose_anchors.pt").is_file()
    kps = inverted_keypoints(cfg, fake_teacher, tmp_path / "run")  # read with the angles, from the cache
    assert kps.shape == (6, 5, 2) and torch.isnan(kps[5]).all()
    np.testing.assert_allclose(kps[:5].numpy(), ref.kps[:5], atol=1e-4)
    torch.testing.assert_close(inverted_pose_anchors(cfg, fake_teacher, tmp_path / "run"), got, equal_nan=True)
    old = load_torch(tmp_path / "run" / "pose_anchors.pt")
    save_torch(tmp_path / "run" / "pose_anchors.pt", {"key": old["key"], "angles": old["angles"] * 0})  # a cache from before keypoints
    torch.testing.assert_close(inverted_keypoints(cfg, fake_teacher, tmp_path / "run"), kps, equal_nan=True)
    torch.testing.assert_close(inverted_pose_anchors(cfg, fake_teacher, tmp_path / "run"), got, equal_nan=True)
    (tmp_path / "run" / "pose_anchors.pt").write_bytes(b"damaged")  # a damaged cache is made again
    torch.testing.assert_close(inverted_pose_anchors(cfg, fake_teacher, tmp_path / "run"), got, equal_nan=True)
    assert load_torch(tmp_path / "run" / "pose_anchors.pt")["found"] == 5
    from digan.utils.io import sha256_file

    assert load_torch(tmp_path / "run" / "pose_anchors.pt")["key"]["detector"] == "file:" + sha256_file(det)
    assert inverted_face_readings(cfg, fake_teacher, tmp_path / "run")["detector"] == "file:" + sha256_file(det)
    with pytest.raises(DiganError, match="read_pose needs the detector"):
        FacePipeline(align="fixed", recognizer=False).read_pose(np.zeros((1, 64, 64, 3), np.uint8))
    for i in range(6, 12):  # now most images show no face
        Image.fromarray(np.full((64, 64, 3), 20 * (i - 5), dtype=np.uint8)).save(imgs / f"{i:03d}.png")
    many = _cfg(f"train.inverted_data={imgs.parent}", "train.inverted_n=12", f"train.pose_detector={det}")
    with pytest.raises(DiganError, match="found a face in only 5 of 12 images"):
        inverted_pose_anchors(many, fake_teacher, tmp_path / "run2")


def test_inverted_mirror_adds_each_heads_mirror(teacher, base, heads, tmp_path):
    """train.inverted_mirror (calibrate-view --mirror-heads): the bank holds the codes of the
    first n heads, then those of the same heads mirrored, each the inversion of that image (the
    same inversion, run here on the flipped pixels by hand); the run records n heads used, and
    mirrored; a bank cached without mirrors is not taken for one with them."""
    from digan.student.method import invert_teacher
    from digan.teacher.data import ImageFolderData

    assert CalibrationSettings().mirror is True  # the default since the seventeenth session
    settings = CalibrationSettings(steps=2, lr=3e-3, fraction=1.0, n=3, inversion_steps=2, pose_anchor=0, pose_anchor_pitch=0,
                                   mirror=False)
    assert calibration_config(base, heads, settings).train.inverted_mirror is False
    plain = calibrate_view(base, heads, tmp_path / "plain", teacher=teacher, settings=settings, overrides=["train.batch=4"],
                           show_progress=False)
    assert plain.inverted_heads == {"used": 3, "asked": 3}
    settings.mirror = True
    assert calibration_config(base, heads, settings).train.inverted_mirror is True
    res = calibrate_view(base, heads, tmp_path / "mir", teacher=teacher, settings=settings, overrides=["train.batch=4"],
                         show_progress=False)
    assert res.inverted_heads == {"used": 3, "asked": 3, "mirrored": True}
    assert json.loads((tmp_path / "mir" / "run.json").read_text())["inverted_heads"]["mirrored"] is True
    bank = load_torch(tmp_path / "mir" / "inverted_codes.pt")["codes"]
    x = ImageFolderData(heads / "images", mirror=False, cache_gb=0).load([0, 1, 2])
    want = invert_teacher(teacher, torch.cat([x, x.flip(3)]), Student.load(base, teacher=teacher).g3d.w_std, 2)
    assert bank.shape == (6, 32)
    torch.testing.assert_close(bank, want)
    assert not torch.allclose(bank[:3], bank[3:], atol=1e-3)  # the mirrors are other images
    torch.testing.assert_close(load_torch(tmp_path / "plain" / "inverted_codes.pt")["codes"], bank[:3], atol=1e-4, rtol=1e-4)
    # a cache without mirrors in the mirrored run's folder is made again, with them
    (tmp_path / "mir" / "inverted_codes.pt").write_bytes((tmp_path / "plain" / "inverted_codes.pt").read_bytes())
    from digan.student.train import inverted_code_bank

    cfg = calibration_config(base, heads, settings)
    assert inverted_code_bank(cfg, teacher, Student.load(base, teacher=teacher).g3d.w_std, tmp_path / "mir", "cpu").shape == (6, 32)


def test_inverted_mirror_reads_the_mirrored_photos(face_models, shared_data, tmp_path):
    """With train.inverted_mirror the detector reads each photo and then its mirror: the mirror's
    rows are the pipeline's readings of the flipped pixels, whose yaw is about the photo's,
    negated (a flip turns the head the other way)."""
    from types import SimpleNamespace

    from PIL import Image

    from digan.faces.pipeline import FacePipeline
    from digan.student.train import inverted_face_readings
    from digan.teacher.data import ImageFolderData

    imgs = tmp_path / "real" / "images"
    imgs.mkdir(parents=True)
    for i, p in enumerate(sorted((shared_data / "faces" / "celeba_aligned").glob("*.jpg"))[:4]):
        Image.open(p).convert("RGB").resize((64, 64), Image.BICUBIC).save(imgs / f"{i:03d}.png")
    det = str(face_models / "det_500m.onnx")
    cfg = _cfg(f"train.inverted_data={imgs.parent}", "train.inverted_n=3", f"train.pose_detector={det}", "train.inverted_mirror=true")
    got = inverted_face_readings(cfg, SimpleNamespace(size=64), tmp_path / "run")
    x = ImageFolderData(imgs, mirror=False, cache_gb=0).load([0, 1, 2])
    pipe = FacePipeline(detector=det, recognizer=False)
    ref, flip = pipe.analyze(x, embed=False), pipe.analyze(x.flip(3), embed=False)
    assert got["angles"].shape == (6, 2) and got["kps"].shape == (6, 5, 2)
    np.testing.assert_allclose(got["angles"][:3].numpy(), np.stack([ref.pitch, ref.yaw], 1), atol=1e-4)
    np.testing.assert_allclose(got["angles"][3:].numpy(), np.stack([flip.pitch, flip.yaw], 1), atol=1e-4)
    np.testing.assert_allclose(got["kps"][3:].numpy(), flip.kps, atol=1e-4)
    assert np.abs(got["angles"][3:, 1].numpy() + ref.yaw).max() < 6.0
    assert load_torch(tmp_path / "run" / "pose_anchors.pt")["key"]["mirror"] is True


def test_inverted_shift_lr_inverts_the_bank_as_a_reconstruction_does(teacher, base, heads, tmp_path):
    """train.inverted_shift_lr > 0: each head of the bank is inverted with the image shift fitted
    beside the code (invert_teacher's shift_lr, as Student.reconstruct inverts a photo), so the
    codes are those of the shifted inversion, not the plain one; a cache made without the shift
    is made again, and one made with it is read back."""
    from digan.student.method import invert_teacher
    from digan.student.train import inverted_code_bank
    from digan.teacher.data import ImageFolderData

    settings = CalibrationSettings(n=3, inversion_steps=4, mirror=False)
    w_std = Student.load(base, teacher=teacher).g3d.w_std
    x = ImageFolderData(heads / "images", mirror=False, cache_gb=0).load([0, 1, 2])
    plain_cfg = calibration_config(base, heads, settings)
    assert plain_cfg.train.inverted_shift_lr == 0.0  # the default: the plain inversion
    plain = inverted_code_bank(plain_cfg, teacher, w_std, tmp_path, "cpu")
    torch.testing.assert_close(plain, invert_teacher(teacher, x, w_std, 4))
    cfg = calibration_config(base, heads, settings, overrides=["train.inverted_shift_lr=0.5"])
    bank = inverted_code_bank(cfg, teacher, w_std, tmp_path, "cpu")  # the plain cache is not taken
    torch.testing.assert_close(bank, invert_teacher(teacher, x, w_std, 4, shift_lr=0.5))
    assert not torch.allclose(bank, plain, atol=1e-4)
    assert load_torch(tmp_path / "inverted_codes.pt")["key"]["shift_lr"] == 0.5
    # read back from the cache (a changed file would be returned as it is)
    c = load_torch(tmp_path / "inverted_codes.pt")
    c["codes"] = c["codes"] + 1.0
    torch.save(c, tmp_path / "inverted_codes.pt")
    torch.testing.assert_close(inverted_code_bank(cfg, teacher, w_std, tmp_path, "cpu"), bank + 1.0)
    with pytest.raises(DiganError, match="inverted_shift_lr >= 0"):
        inverted_code_bank(calibration_config(base, heads, settings, overrides=["train.inverted_shift_lr=-1"]), teacher, w_std,
                           tmp_path / "bad", "cpu")
