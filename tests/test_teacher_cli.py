"""Teacher CLI: ``sample --teacher`` writes reproducible images that match the library, one-line
errors for bad input, ``train-teacher`` end to end on a tiny config, the benchmark's figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from digan.cli import main
from digan.teacher import Generator, StyleGAN2Config, Teacher, load_teacher
from digan.teacher.checkpoint import make_checkpoint, save_checkpoint

CFG = StyleGAN2Config(size=16, style_dim=16, n_mlp=2, channels={4: 16, 8: 16, 16: 8})


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def ckpt(tmp_path) -> Path:
    torch.manual_seed(0)
    g = Generator(CFG)
    return save_checkpoint(tmp_path / "t.pt", make_checkpoint(g, CFG, latent_avg=Teacher(g, n_mean=256).w_mean))


def test_sample_writes_images_matching_the_library(ckpt, tmp_path):
    out = tmp_path / "s"
    assert main(["sample", "--teacher", str(ckpt), "--n", "5", "--batch", "2", "--seed", "3", "--psi", "0.7", "--out", str(out)]) == 0
    files = sorted((out / "images").glob("*.png"))
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(5)]
    t = load_teacher(ckpt)
    ref = t.sample(5, seed=3, psi=0.7)
    for i, f in enumerate(files):
        got = np.asarray(Image.open(f)).astype(np.float64)
        exp = ((ref[i].clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()
        assert np.abs(got - exp).max() <= 1.0  # same image up to 8-bit rounding
    w = np.load(out / "w.npy")
    assert w.shape == (5, 16) and np.allclose(w, t.sample_w(5, seed=3, psi=0.7).numpy(), atol=1e-5)
    assert (out / "grid.png").is_file()
    assert json.loads((out / "config.json").read_text())["psi"] == 0.7
    # existing output needs --force; with it the folder is replaced
    assert main(["sample", "--teacher", str(ckpt), "--n", "2", "--out", str(out)]) == 2
    assert main(["sample", "--teacher", str(ckpt), "--n", "2", "--out", str(out), "--force"]) == 0
    assert len(list((out / "images").glob("*.png"))) == 2


def test_sample_errors_are_one_line(tmp_path, capsys):
    assert main(["sample", "--teacher", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: teacher checkpoint") and "not found" in err and "\n" not in err
    assert main(["sample", "--out", str(tmp_path / "o")]) == 2
    assert "--teacher" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_train_teacher_cli_end_to_end(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(1)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(data / f"{i}.png")
    out = tmp_path / "run"
    args = ["train-teacher", "--data", str(data), "--out", str(out), "--preset", "tiny", "--steps", "2", "--batch", "4",
            "--set", "model.size=16", "--set", "model.channels={4: 16, 8: 16, 16: 8}", "--set", "w_mean_samples=64", "--set", "grid_n=4"]
    assert main(args) == 0
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 2 and ck["config"]["model"]["size"] == 16 and ck["config"]["batch"] == 4
    assert main(["sample", "--teacher", str(out / "teacher.pt"), "--n", "2", "--out", str(tmp_path / "s")]) == 0
    assert main(args[:-2] + ["--set", "r1=0.5"]) == 2  # changed config refuses to resume (lr may change: issue 12)
    assert main(["train-teacher", "--data", str(data), "--out", str(out), "--preset", "nope"]) == 2


def test_bench_case_figures_are_consistent():
    from digan.teacher.bench import _case, parse_cases

    # BATCHxSIZE as in bench renderer; the old SIZExBATCH order still reads right where unambiguous
    assert parse_cases("tiny@16x64:cpu, standard@8x256:cuda") == [("tiny", 64, 16, "cpu"), ("standard", 256, 8, "cuda")]
    assert parse_cases("tiny@64x16:cpu, standard@256x8:cuda, tiny@32x2") == [
        ("tiny", 64, 16, "cpu"), ("standard", 256, 8, "cuda"), ("tiny", 32, 2, "cpu")]
    assert parse_cases("tiny@64x32") == [("tiny", 32, 64, "cpu")]  # both could be sizes: BATCHxSIZE
    from digan.errors import DiganError

    with pytest.raises(DiganError, match="PRESET@BATCHxSIZE"):
        parse_cases("tiny64")
    with pytest.raises(DiganError, match="power of two"):
        parse_cases("tiny@16x48")
    r = _case("tiny", 16, 4, "cpu", repeats=1, warmup=0, threads=1, seed=0)
    assert r["step_ms"] > 0 and r["r1_ms"] > 0 and r["pl_ms"] == 0
    assert r["amortized_ms"] == pytest.approx(r["step_ms"] + r["r1_ms"] / 16)
    assert r["img_per_s"] == pytest.approx(4 / (r["amortized_ms"] / 1000))
    assert r["peak_mem_mb"] > 0
