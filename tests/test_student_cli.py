"""``digan-bench train`` / ``export`` / ``bench student`` through the CLI entry point."""

from __future__ import annotations

import json
import re

import pytest
import torch

from digan.cli import main
from digan.student.testing import save_random_teacher

pytestmark = [pytest.mark.filterwarnings("ignore:VGG16 weights not found"), pytest.mark.filterwarnings("ignore:no torch face recogniser")]

_SMALL = ["-s", "train.w_stats_samples=256", "-s", "train.batch=2", "-s", "loss.identity=0"]


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("cli") / "teacher.pt"
    save_random_teacher(p, size=32, style_dim=32, width=8)
    return p


def test_train_then_export(teacher_file, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--teacher", str(teacher_file), "--preset", "tiny", "--variant", "no_flip", "--steps", "2", "--out", str(out), *_SMALL])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["variant"] == "no_flip" and cfg["loss"]["flip"] == 0 and cfg["train"]["steps"] == 2 and cfg["preset"] == "tiny"
    run = json.loads((out / "run.json").read_text())
    assert run["losses"]["perceptual"]["perceptual"] in ("vgg16", "laplacian_pyramid")
    assert run["teacher_hash"].startswith("file:")
    from digan.student.train import package_student
    from digan.utils.io import sha256_file

    pt, js = package_student(out, tmp_path / "pkg" / "s.pt", command="digan-bench train ...")
    prov = json.loads(js.read_text())
    assert prov["steps"] == 2 and prov["sha256"] == sha256_file(pt) and prov["teacher"]["sha256"] == run["teacher_hash"]
    assert prov["config"]["variant"] == "no_flip" and "rec" in prov["last_losses"]
    rc = main(["export", "--student", str(out / "student.pt"), "--out", str(tmp_path / "m"), "--n", "2", "--formats", "obj,glb"])
    assert rc == 0
    rc = main(["sample", "--student", str(out / "student.pt"), "--n", "1", "--yaws", "-15,15", "--light", "0.3,0.8,0.5,0",
               "--out", str(tmp_path / "smp")])
    assert rc == 0
    assert {"yaw-15_pitch+0.png", "yaw+15_pitch+0.png", "relit_0.png", "depth.png"} <= {p.name for p in (tmp_path / "smp" / "face_0000").iterdir()}
    assert main(["sample", "--student", str(out / "student.pt"), "--light", "1,2", "--out", str(tmp_path / "bad")]) == 2
    names = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert names == ["config.json", "face_0000.glb", "face_0000.mtl", "face_0000.obj", "face_0000.png",
                     "face_0001.glb", "face_0001.mtl", "face_0001.obj", "face_0001.png", "run.json"]
    # sample and export write config.json and run.json as the README promises (issue 13)
    ecfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert ecfg["n"] == 2 and ecfg["formats"] == ["obj", "glb"] and ecfg["student"] == str(out / "student.pt")
    erun = json.loads((tmp_path / "m" / "run.json").read_text())
    assert erun["kind"] == "export" and erun["weights"]["student"].startswith("file:") and erun["seeds"] == {"latents": 0}
    scfg = json.loads((tmp_path / "smp" / "config.json").read_text())
    assert scfg["yaws"] == [-15.0, 15.0] and scfg["grid_columns"] == ["teacher", "yaw -15", "yaw 15"]
    assert json.loads((tmp_path / "smp" / "run.json").read_text())["kind"] == "sample-student"
    # the grid's columns are labelled: a white strip with dark text above each of the 3 columns
    import numpy as np
    from PIL import Image

    from digan.cli.sample import label_grid_columns

    grid = np.asarray(Image.open(tmp_path / "smp" / "grid.png").convert("L")).astype(float)
    assert (grid[:2] > 250).all()  # the white label strip on top
    plain = tmp_path / "plain.png"
    Image.fromarray(np.full((40, 120), 90, np.uint8)).save(plain)
    label_grid_columns(plain, ["teacher", "yaw -15", "yaw 15"])
    lab = np.asarray(Image.open(plain).convert("L")).astype(float)
    strip = lab[: lab.shape[0] - 40]
    assert 8 <= strip.shape[0] <= 24 and (lab[strip.shape[0]:] == 90).all()
    thirds = np.array_split(strip, 3, axis=1)
    assert all((t < 128).any() for t in thirds) and all((t > 250).mean() > 0.6 for t in thirds)


def test_cli_errors_are_one_line(teacher_file, tmp_path, capsys):
    rc = main(["train", "--teacher", str(teacher_file), "--variant", "nope", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: unknown DIGAN variant") and err.count("\n") == 1
    rc = main(["train", "--teacher", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x")])
    assert rc == 2
    rc = main(["train", "--teacher", str(teacher_file), "--out", str(tmp_path / "x"), "-s", "loss.nope=1"])
    assert rc == 2 and "unknown config key 'loss.nope'" in capsys.readouterr().err
    rc = main(["export", "--student", str(teacher_file), "--out", str(tmp_path / "m")])
    assert rc == 2 and "not a digan-bench student checkpoint" in capsys.readouterr().err


def _student_and_heads(teacher_file, tmp_path, n_heads: int):
    """A student trained for 2 steps (OUT/run) and a folder of ``n_heads`` 32 px noise images
    (OUT/real) to calibrate it on."""
    import numpy as np
    from PIL import Image

    out = tmp_path / "run"
    assert main(["train", "--teacher", str(teacher_file), "--preset", "tiny", "--steps", "2", "--out", str(out), *_SMALL]) == 0
    (tmp_path / "real").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n_heads):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "real" / f"{i}.png")
    return out, tmp_path / "real"


def test_calibrate_view_through_the_cli(teacher_file, tmp_path, capsys):
    """train, then calibrate-view: a run folder with the calibrated student (only DV trained),
    its summary; a missing student, a non-student file and a fraction of 0 are one-line errors."""
    import numpy as np
    from PIL import Image

    from digan.utils.io import load_torch

    out, heads = _student_and_heads(teacher_file, tmp_path, 3)
    cal = tmp_path / "cal"
    capsys.readouterr()
    rc = main(["calibrate-view", "--student", str(out / "student.pt"), "--images", str(heads), "--out", str(cal),
               "--steps", "2", "--heads", "2", "--inversion-steps", "1", "--pose-anchor", "0", "--pose-anchor-pitch", "0",
               "-s", "train.batch=2", "-s", "train.w_stats_samples=256"])
    text = capsys.readouterr().out
    assert rc == 0 and "view calibration" in text and re.search(r"inverted heads: 2 and their mirrors\n", text)
    assert json.loads((cal / "run.json").read_text())["inverted_heads"] == {"used": 2, "asked": 2, "mirrored": True}
    # more heads asked than the folder holds: all are used, and the summary, a warning and
    # run.json say so (it used to pass in silence, recording only the count asked)
    with pytest.warns(UserWarning, match="holds 3 images, fewer than the 9 asked"):
        rc = main(["calibrate-view", "--student", str(out / "student.pt"), "--images", str(heads), "--out", str(tmp_path / "cal9"),
                   "--steps", "1", "--heads", "9", "--inversion-steps", "1", "--pose-anchor", "0", "--pose-anchor-pitch", "0",
                   "-s", "train.batch=2", "-s", "train.w_stats_samples=256"])
    assert rc == 0 and "3 (the folder holds 3; 9 asked)" in capsys.readouterr().out
    assert json.loads((tmp_path / "cal9" / "run.json").read_text())["inverted_heads"] == {"used": 3, "asked": 9, "mirrored": True}
    # --no-mirror-heads: only the heads themselves are inverted, and the summary says so
    rc = main(["calibrate-view", "--student", str(out / "student.pt"), "--images", str(heads), "--out", str(tmp_path / "calm"),
               "--steps", "1", "--heads", "2", "--inversion-steps", "1", "--pose-anchor", "0", "--pose-anchor-pitch", "0",
               "--no-mirror-heads", "-s", "train.batch=2", "-s", "train.w_stats_samples=256"])
    assert rc == 0 and re.search(r"inverted heads: 2\n", capsys.readouterr().out)
    assert load_torch(tmp_path / "calm" / "inverted_codes.pt")["codes"].shape[0] == 2
    assert load_torch(cal / "inverted_codes.pt")["codes"].shape[0] == 4
    a, b = load_torch(out / "student.pt")["state"], load_torch(cal / "student.pt")["state"]
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("depth_net."))
    assert json.loads((cal / "config.json").read_text())["train"]["trainable"] == ["view_net"]
    (tmp_path / "small").mkdir()
    (tmp_path / "empty").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "small" / "0.png")
    real, small, empty = str(heads), str(tmp_path / "small"), str(tmp_path / "empty")
    for args, msg in (([str(tmp_path / "none.pt"), real], "not found"), ([str(teacher_file), real], "not a digan-bench student checkpoint"),
                      ([str(out / "student.pt"), real, "--fraction", "0"], "out of range"),
                      ([str(out / "student.pt"), small], "are 16x16 px but the teacher makes 32x32"),
                      ([str(out / "student.pt"), empty], "has no images"),
                      ([str(out / "student.pt"), str(tmp_path / "nowhere")], "is not a folder of images"),
                      ([str(out / "student.pt"), real, "--detector", str(tmp_path / "no_det.onnx")], "check the path given as --detector PATH"),
                      ([str(out / "student.pt"), real, "--pose-anchor", "-1"], "Invalid value for '--pose-anchor'")):
        rc = main(["calibrate-view", "--student", args[0], "--images", args[1], "--out", str(tmp_path / "x"), *args[2:],
                   "-s", "train.w_stats_samples=256"])
        err = capsys.readouterr().err
        assert rc == 2 and msg in err and err.count("\n") == 1, err


@pytest.mark.slow
def test_calibrate_view_under_torchrun(teacher_file, tmp_path):
    """torchrun with 2 gloo processes: rank 0 inverts the heads and writes the cache, rank 1
    receives the codes from it; the run finishes and DV alone has moved. Rerun with --force over
    it, rank 1 does not read OUT's old cache (rank 0 works in a staging folder): a broken one there
    does not stop the run."""
    import os
    import subprocess
    import sys

    from digan.utils.io import load_torch

    out, heads = _student_and_heads(teacher_file, tmp_path, 4)
    cal = tmp_path / "cal"
    env = dict(os.environ, DIGAN_BENCH_QUIET="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29519",
           "-m", "digan.cli", "calibrate-view", "--student", str(out / "student.pt"), "--images", str(heads),
           "--out", str(cal), "--steps", "2", "--heads", "4", "--inversion-steps", "1", "--device", "cpu",
           "--pose-anchor", "0", "--pose-anchor-pitch", "0", "-s", "train.batch=2", "-s", "train.w_stats_samples=256"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert load_torch(cal / "inverted_codes.pt")["codes"].shape[0] == 8  # 4 heads and their mirrors (the default)
    a, b = load_torch(out / "student.pt")["state"], load_torch(cal / "student.pt")["state"]
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("depth_net.", "light_net.", "compose.")))
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("view_net."))
    ck = load_torch(cal / "student.pt")  # recorded once, by rank 0
    assert ck["config"] == load_torch(out / "student.pt")["config"] and ck["view_calibration"]["steps"] == 2
    assert p.stdout.count("view calibration") == 1  # one summary, rank 0's
    (cal / "inverted_codes.pt").write_bytes(b"not a torch file")
    p = subprocess.run([*cmd, "--force"], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert load_torch(cal / "inverted_codes.pt")["codes"].shape[0] == 8


@pytest.mark.slow
def test_calibrate_view_with_the_pose_anchor_under_torchrun(teacher_file, tmp_path, face_models, shared_data):
    """torchrun with 2 gloo processes and the landmark pose anchor on: rank 0 reads the heads'
    pose with the detector and sends it with the codes; both ranks train with it (the loss is
    logged), and the run records the detector's hash."""
    import os
    import subprocess
    import sys

    from PIL import Image

    from digan.utils.io import load_torch, sha256_file

    out, _ = _student_and_heads(teacher_file, tmp_path, 1)
    heads = tmp_path / "photos"
    heads.mkdir()
    for i, p in enumerate(sorted((shared_data / "faces" / "celeba_aligned").glob("*.jpg"))[:4]):
        Image.open(p).convert("RGB").resize((32, 32), Image.BICUBIC).save(heads / f"{i}.png")
    det = face_models / "det_500m.onnx"
    cal = tmp_path / "cal"
    env = dict(os.environ, DIGAN_BENCH_QUIET="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29523",
           "-m", "digan.cli", "calibrate-view", "--student", str(out / "student.pt"), "--images", str(heads),
           "--out", str(cal), "--steps", "2", "--heads", "4", "--inversion-steps", "1", "--device", "cpu",
           "--detector", str(det), "-s", "train.batch=2", "-s", "train.w_stats_samples=256", "-s", "train.log_every=1"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    anchors = load_torch(cal / "pose_anchors.pt")
    assert anchors["angles"].shape == (8, 2) and anchors["found"] >= 4  # the 4 photos, then their mirrors
    assert anchors["key"]["mirror"] is True
    assert "pose_anchor" in (cal / "losses.csv").read_text().splitlines()[0].split(",")
    assert json.loads((cal / "run.json").read_text())["pose_detector"] == "file:" + sha256_file(det)
    assert load_torch(cal / "student.pt")["view_calibration"]["loss"]["pose_anchor"] == 10


@pytest.mark.slow
def test_training_under_torchrun_gives_rank_1_rank_0s_anchors_and_keypoints(teacher_file, tmp_path, face_models, shared_data):
    """torchrun with 2 gloo processes, training with the pose anchor and the landmark parallax on
    inverted photos: rank 1 never reads the run folder, so the codes, the detector's pose
    anchors and its keypoints it trains with must be rank 0's, sent to it. Each rank's objective
    is read at its first step (a wrapper around the objective's forward, in the launched script)
    and both must equal the caches rank 0 wrote."""
    import os
    import subprocess
    import sys
    import textwrap

    from PIL import Image

    from digan.utils.io import load_torch

    heads = tmp_path / "photos"
    heads.mkdir()
    for i, p in enumerate(sorted((shared_data / "faces" / "celeba_aligned").glob("*.jpg"))[:4]):
        Image.open(p).convert("RGB").resize((32, 32), Image.BICUBIC).save(heads / f"{i}.png")
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    script = tmp_path / "launch.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, torch
        import digan.student.objective as O
        forward = O.DistillationObjective.forward
        def first_step(self, *a, **k):
            if not getattr(self, "_seen", False):
                self._seen = True
                rank = os.environ["RANK"]
                torch.save({{"bank": self.code_bank.cpu(), "pose": self.code_pose.cpu(), "kps": self.code_kps.cpu()}},
                           os.path.join({str(dumps)!r}, "rank" + rank + ".pt"))
            return forward(self, *a, **k)
        O.DistillationObjective.forward = first_step
        from digan.cli import main
        sys.exit(main(sys.argv[1:]))
    """))
    out = tmp_path / "run"
    env = dict(os.environ, DIGAN_BENCH_QUIET="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29527", str(script),
           "train", "--teacher", str(teacher_file), "--preset", "tiny", "--steps", "2", "--out", str(out), "--device", "cpu",
           *_SMALL, "-s", f"train.inverted_data={heads}", "-s", "train.inverted_n=4", "-s", "train.inverted_steps=1",
           "-s", f"train.pose_detector={face_models / 'det_500m.onnx'}", "-s", "loss.pose_anchor=10",
           "-s", "loss.landmark_parallax=0.3", "-s", "train.depth_warmup=0"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    r0, r1 = load_torch(dumps / "rank0.pt"), load_torch(dumps / "rank1.pt")
    codes, anchors = load_torch(out / "inverted_codes.pt")["codes"], load_torch(out / "pose_anchors.pt")
    assert anchors["found"] >= 3  # real faces: the keypoints are numbers, not NaN rows
    for r in (r0, r1):
        torch.testing.assert_close(r["bank"], codes)
        torch.testing.assert_close(r["pose"], anchors["angles"], equal_nan=True)
        torch.testing.assert_close(r["kps"], anchors["kps"], equal_nan=True)
    assert torch.isfinite(r1["kps"]).all(-1).all(-1).sum() >= 3


@pytest.mark.slow
def test_bench_student_prints_and_writes_json(teacher_file, tmp_path):
    out = tmp_path / "bench.json"
    rc = main(["bench", "student", "--presets", "tiny", "--sizes", "32", "--device", "cpu", "--batch", "2", "--repeats", "2",
               "--teacher", str(teacher_file), "--out", str(out), "-s", "train.w_stats_samples=256"])
    assert rc == 0
    r = json.loads(out.read_text())["results"][0]
    assert r["ms_per_step"] > 0 and r["faces_per_s"] > 0 and r["peak_mem_mb"] >= 0 and r["size"] == 32
