"""The demo preset: its wiring, the missing-asset error and the labelled FID fallback."""

from __future__ import annotations

from pathlib import Path

import pytest

from digan.cli import main
from digan.errors import DiganError, MissingAssetError
from evaluate import presets
from evaluate.metrics import fid as F


def test_demo_wiring_without_preparation(monkeypatch, tmp_path):
    monkeypatch.setattr(F, "_cleanfid_cache_dir", lambda: tmp_path / "no-inception")
    cfg = presets.demo_config(cache_dir=tmp_path, prepare=False)
    assert cfg.methods == ["digan", "teacher"] and cfg.preset == "demo"
    assert cfg.metrics == ["fid", "kid", "identity", "pose", "side", "mad", "speed"]
    assert cfg.n_faces == presets.DEMO_N_FACES <= 128
    # offline: the demo-only extractor, for both FID and KID, against the synthetic images
    assert cfg.metric_options["fid"] == {"dataset": "synth", "extractor": "randproj"}
    assert cfg.metric_options["kid"] == {"dataset": "synth", "extractor": "randproj"}
    assert cfg.metric_options["side"]["dataset"] == "synth"
    # with the Inception file present the real extractor is used
    (tmp_path / "inception-2015-12-05.pt").write_bytes(b"x")
    cfg = presets.demo_config(cache_dir=tmp_path, prepare=False)
    assert cfg.metric_options["fid"]["extractor"] == "inception"


def test_demo_uses_shared_face_models_when_present(monkeypatch, tmp_path):
    fm = tmp_path / "face-models"
    fm.mkdir()
    (fm / "det_500m.onnx").write_bytes(b"x")
    (fm / "mobilefacenet_arcface_w128.onnx").write_bytes(b"x")
    monkeypatch.setenv("DIGAN_BENCH_TEST_DATA", str(tmp_path))
    cfg = presets.demo_config(cache_dir=tmp_path / "c", prepare=False)
    assert cfg.models == {"detector": str(fm / "det_500m.onnx"), "recognizer": str(fm / "mobilefacenet_arcface_w128.onnx")}
    monkeypatch.setenv("DIGAN_BENCH_TEST_DATA", str(tmp_path / "absent"))
    assert presets.demo_config(cache_dir=tmp_path / "c", prepare=False).models == {}


def test_demo_names_missing_bundled_models(monkeypatch, tmp_path):
    monkeypatch.setattr(presets, "assets_dir", lambda: tmp_path)
    (tmp_path / "tiny_teacher_64.pt").write_bytes(b"x")
    with pytest.raises(MissingAssetError) as e:
        presets.demo_config(cache_dir=tmp_path / "c")
    assert "tiny_student_64.pt" in str(e.value) and "tiny_teacher_64.pt" not in str(e.value)
    assert str(tmp_path) in str(e.value)


def test_unknown_preset_and_cli_list(capsys):
    with pytest.raises(DiganError, match="unknown preset 'nope'; choose from: demo"):
        presets.build_preset("nope")
    assert main(["run", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("teacher", "fid", "kid", "side", "mad", "speed", "demo"):
        assert name in out
    # spec syntax in brackets is printed, not taken for console markup
    assert "digan[@variant][:student.pt or folder]" in " ".join(out.split())


def test_cli_list_hanging_indent():
    from digan.cli.evaluate import listing_lines

    table = {"digan": "DIGAN student (G3D). digan[@variant][:student.pt or folder]; default the bundled tiny student",
             "x": "short", "long": "a " + "w" * 90}
    lines = listing_lines(table, width=80)
    assert lines[0].startswith("  digan          DIGAN student")
    # every line but the three name lines sits under the description column
    assert [ln.split()[0] for ln in lines if not ln.startswith(" " * 17)] == ["digan", "x", "long"]
    assert "digan[@variant][:student.pt" in " ".join(lines)
    assert all(len(ln) <= 80 for ln in lines if "w" * 90 not in ln)
    assert any(ln.strip() == "w" * 90 for ln in lines)  # a word longer than the line stays whole
    assert "  x              short" in lines


def test_cli_preset_missing_assets_and_config_file(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(presets, "assets_dir", lambda: tmp_path / "assets")
    assert main(["run", "--preset", "demo", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: bundled demo model(s) tiny_teacher_64.pt, tiny_student_64.pt not found at")
    # a config file names only some keys; options and --set apply on top of it
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _engine_fakes  # noqa: F401

    cfgfile = tmp_path / "run.yaml"
    cfgfile.write_text("methods: [fake2d]\nmetrics: [test_mean]\nn_faces: 5\nbatch_size: 2\n")
    out = tmp_path / "r2"
    assert main(["run", "--config", str(cfgfile), "--n-faces", "4", "--device", "cpu", "--out", str(out),
                 "--set", "seed=3"]) == 0
    run = __import__("json").loads((out / "run.json").read_text())["config"]
    assert run["methods"] == ["fake2d"] and run["n_faces"] == 4 and run["seed"] == 3 and run["batch_size"] == 2
    cfgfile.write_text("n_face: 5\n")
    assert main(["run", "--config", str(cfgfile)]) == 2
    assert "unknown config key 'n_face'" in capsys.readouterr().err
