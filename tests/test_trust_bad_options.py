"""Option values that parse but make no sense end in one ``error:`` line (exit status 2) before
any output folder exists, instead of a traceback or a folder of NaN images:

* ``--device gpu`` / ``cuda:x`` (torch's RuntimeError reached the user from every command) and
  ``cuda`` on a machine without a GPU, also through ``--set device=...``;
* ``--psi nan``: ``sample --teacher`` wrote all-black images and a NaN ``w.npy``;
* NaN angles or lights, no yaws at all, and ``export`` with no format or a zero/NaN ``--scale``;
* a binary ``shape_eval.jsonl`` in a run folder given to ``report --runs``.
"""

from __future__ import annotations

import math

import pytest
import torch

from digan.cli import main
from digan.errors import DiganError
from digan.student.inference import Student
from digan.utils.dist import check_device

ASSETS = __import__("pathlib").Path(__file__).resolve().parents[1] / "digan" / "assets"
STUDENT = str(ASSETS / "tiny_student_64.pt")

pytestmark = [pytest.mark.filterwarnings("ignore:VGG16 weights not found"), pytest.mark.filterwarnings("ignore:no torch face recogniser")]


def _error_line(capsys, rc) -> str:
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_check_device_accepts_real_devices_and_names_the_fix_otherwise():
    assert check_device("auto") is None and check_device("") is None
    assert check_device("cpu") == torch.device("cpu")
    for bad in ("gpu", "cuda:x", "bogus", "cpu:zero"):
        with pytest.raises(DiganError, match=r"bad --device .*write auto, cpu, cuda or cuda:N"):
            check_device(bad)
    if torch.cuda.is_available():
        with pytest.raises(DiganError, match="visible GPU"):
            check_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(DiganError, match="no CUDA GPU is visible; pass --device cpu or auto"):
            check_device("cuda:0")


def _device_commands(tmp_path, device):
    o = str(tmp_path / "out")
    return {
        "run": ["run", "--methods", "digan", "--metrics", "speed", "-n", "1", "--device", device, "--out", o],
        "run --set": ["run", "--methods", "digan", "--metrics", "speed", "-n", "1", "--set", f"device={device}", "--out", o],
        "sample --teacher": ["sample", "--teacher", "tiny", "-n", "1", "--device", device, "--out", o],
        "sample --student": ["sample", "--student", STUDENT, "-n", "1", "--device", device, "--out", o],
        "export": ["export", "--student", STUDENT, "--n", "1", "--device", device, "--out", o],
        "export-samples": ["export-samples", "-m", "digan", "-n", "1", "--device", device, "--out", o],
        "report": ["report", "--results", str(tmp_path), "-m", "digan", "--device", device, "--out", o],
        "restore": ["restore", "--student", STUDENT, "--images", str(tmp_path), "--device", device, "--out", o],
        "train": ["train", "-t", "tiny", "--preset", "tiny", "--steps", "1", "--threads", "1", "--device", device, "--out", o],
        "train --set": ["train", "-t", "tiny", "--preset", "tiny", "--steps", "1", "--threads", "1", "--set",
                        f"train.device={device}", "--out", o],
        "calibrate-view": ["calibrate-view", "--student", STUDENT, "-i", str(tmp_path), "--steps", "1", "--threads", "1",
                           "--device", device, "--out", o],
        "train-teacher": ["train-teacher", "-d", str(tmp_path), "--steps", "1", "--threads", "1", "--device", device, "--out", o],
    }


@pytest.mark.parametrize("device", ["gpu", "cuda:x"])
def test_every_command_names_a_bad_device_in_one_line(tmp_path, capsys, device):
    for name, args in _device_commands(tmp_path, device).items():
        line = _error_line(capsys, main(args))
        assert f"'{device}'" in line and "auto, cpu, cuda or cuda:N" in line, (name, line)
        assert not (tmp_path / "out").exists(), name


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_one_line_everywhere(tmp_path, capsys):
    for name, args in _device_commands(tmp_path, "cuda").items():
        line = _error_line(capsys, main(args))
        assert "no CUDA GPU is visible" in line and "--device cpu" in line, (name, line)
        assert not (tmp_path / "out").exists(), name


def test_sample_teacher_refuses_a_nan_psi_instead_of_black_images(tmp_path, capsys):
    for psi in ("nan", "inf"):
        line = _error_line(capsys, main(["sample", "--teacher", "tiny", "-n", "1", "--device", "cpu", "--psi", psi,
                                         "--out", str(tmp_path / "s")]))
        assert "--psi must be a finite number" in line
    assert not (tmp_path / "s").exists()
    assert main(["sample", "--teacher", "tiny", "-n", "1", "--device", "cpu", "--psi", "0.7", "--out", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "images" / "000000.png").is_file()


@pytest.mark.parametrize("extra, expect", [
    (["--yaws=nan"], "bad --yaws list 'nan': every number must be finite"),
    (["--pitches=inf"], "bad --pitches list 'inf'"),
    (["--yaws=200"], "bad --yaws list '200': view angles must lie strictly between -90 and 90"),
    (["--pitches=-90"], "bad --pitches list '-90': view angles"),
    (["--light", "nan,0.8,0,0"], "bad --light list"),
    (["--yaws="], "no views to render"),
    (["--psi", "nan"], "must be finite numbers"),
])
def test_sample_student_refuses_nan_views_and_no_views(tmp_path, capsys, extra, expect):
    line = _error_line(capsys, main(["sample", "--student", STUDENT, "-n", "1", "--device", "cpu", "--out", str(tmp_path / "s"),
                                     *extra]))
    assert expect in line, line
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("extra, expect", [
    (["--formats="], "no mesh format given"),
    (["--scale", "0"], "--scale must be a positive finite number"),
    (["--scale", "nan"], "--scale must be a positive finite number"),
    (["--psi", "nan"], "--psi must be a finite number"),
])
def test_export_refuses_empty_formats_and_degenerate_numbers(tmp_path, capsys, extra, expect):
    line = _error_line(capsys, main(["export", "--student", STUDENT, "--n", "1", "--device", "cpu", "--out", str(tmp_path / "m"),
                                     *extra]))
    assert expect in line, line
    assert not (tmp_path / "m").exists()


def test_library_sample_and_export_check_their_numbers(tmp_path):
    from digan.student.export import export_student_meshes
    from digan.student.inference import sample_faces

    s = Student.load(STUDENT, device="cpu")
    with pytest.raises(DiganError, match="no views"):
        sample_faces(s, tmp_path / "a", n=1, yaws=())
    with pytest.raises(DiganError, match="finite"):
        sample_faces(s, tmp_path / "a", n=1, lights=[(0.3, math.nan, 0.0, 0.0)])
    with pytest.raises(DiganError, match="unknown mesh format 'stl'"):
        export_student_meshes(s, tmp_path / "b", n=1, formats=["stl"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_report_names_a_binary_shape_eval_log(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "losses.csv").write_text("step,total\n1,0.5\n2,0.4\n")
    (run / "shape_eval.jsonl").write_bytes(bytes(range(128, 256)) * 4)
    from evaluate.records import Record

    res = tmp_path / "records.jsonl"
    res.write_text(__import__("json").dumps(Record("digan", "speed", value=1.0, n_faces=1).to_dict()) + "\n")
    line = _error_line(capsys, main(["report", "--results", str(res), "--runs", str(run), "--out", str(tmp_path / "rep")]))
    assert str(run / "shape_eval.jsonl") in line and "delete the file" in line
    assert not (tmp_path / "rep").exists()


def test_export_samples_refuses_a_view_from_behind(tmp_path, capsys):
    # a typo such as 200 for 20 rendered a blank folder before
    line = _error_line(capsys, main(["export-samples", "-m", "digan", "-n", "1", "--yaws=20,200", "--out", str(tmp_path / "e")]))
    assert "view angles must lie strictly between -90 and 90" in line, line
    assert not (tmp_path / "e").exists()
