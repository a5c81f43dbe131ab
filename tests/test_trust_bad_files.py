"""Damaged or wrong input files end in one ``error:`` line (exit status 2) naming the file, and
never in a traceback; a damaged baseline is never overwritten by ``check --write-baseline``.

* a binary file given as ``--config``, a results file or a baseline;
* a results file whose records are not objects or hold values of the wrong type;
* a baseline of the right format whose entries or tolerances have the wrong types (a non-object
  ``default_tolerances``, a NaN value, ``higher_is_better: "x"``, ``n_faces: "abc"``) - a NaN
  baseline value used to make every result "within" it, so the check passed.
"""

from __future__ import annotations

import json

import pytest

from digan.cli import main
from evaluate.records import Record

KW = dict(n_faces=8, seeds={"latents": 0})


def _error_line(capsys, rc) -> str:
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture()
def results(tmp_path):
    f = tmp_path / "records.jsonl"
    recs = [Record("digan", "fid", value=100.0, higher_is_better=False, dataset="synth", **KW),
            Record("digan", "identity", value=0.7, unit="cos", higher_is_better=True, **KW)]
    f.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in recs))
    return f


@pytest.fixture()
def baseline(tmp_path, results, capsys):
    b = tmp_path / "baseline.json"
    assert main(["check", "--results", str(results), "--baseline", str(b), "--write-baseline"]) == 0
    assert main(["check", "--results", str(results), "--baseline", str(b)]) == 0
    capsys.readouterr()
    return b


def test_binary_config_is_one_line(tmp_path, capsys):
    bad = tmp_path / "weights.pt"
    bad.write_bytes(bytes(range(256)) * 4)
    line = _error_line(capsys, main(["run", "--methods", "digan", "--metrics", "speed", "-n", "1", "--config", str(bad),
                                     "--out", str(tmp_path / "r")]))
    assert str(bad) in line and "not a text file" in line
    assert not (tmp_path / "r").exists()


def test_binary_results_and_baseline_are_one_line(tmp_path, results, baseline, capsys):
    bad = tmp_path / "random.jsonl"
    bad.write_bytes(bytes(range(128, 256)) * 8)
    for args in (["check", "--results", str(bad), "--baseline", str(baseline)],
                 ["report", "--results", str(bad), "--out", str(tmp_path / "rep")],
                 ["check", "--results", str(results), "--baseline", str(bad)]):
        line = _error_line(capsys, main(args))
        assert str(bad) in line and "UTF-8" in line, args
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("content, expect", [
    ("[1, 2]\n", "item 0 is not an object (got int)"),
    ('[{"method": "digan", "metric": "fid", "value": [1]}]\n', "item 0"),
    ('[{"method": ["digan"], "metric": "fid", "value": 1.0}]\n', "non-text 'method'"),
])
def test_results_with_records_of_the_wrong_shape_are_one_line(tmp_path, baseline, capsys, content, expect):
    bad = tmp_path / "records.json"
    bad.write_text(content)
    for args in (["check", "--results", str(bad), "--baseline", str(baseline)],
                 ["report", "--results", str(bad), "--out", str(tmp_path / "rep")]):
        line = _error_line(capsys, main(args))
        assert f"{bad} {expect}" in line or (str(bad) in line and expect in line), (args, line)


def test_jsonl_record_errors_name_the_line(tmp_path, results, baseline, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(results.read_text() + "7\n")
    line = _error_line(capsys, main(["check", "--results", str(bad), "--baseline", str(baseline)]))
    assert f"{bad} line 3" in line


@pytest.mark.parametrize("edit, expect", [
    (lambda d: d.update(default_tolerances="x"), "default_tolerances 'x'"),
    (lambda d: d["entries"][0].update(value=float("nan")), "non-finite value nan"),
    (lambda d: d["entries"][0].update(value=True), "no numeric value"),
    (lambda d: d["entries"][0].update(higher_is_better="x"), "higher_is_better 'x'"),
    (lambda d: d["entries"][0].update(n_faces="abc"), "n_faces 'abc'"),
    (lambda d: d["entries"][0].update(seeds=3), "seeds 3"),
    (lambda d: d["entries"][0].update(metric=["fid"]), "non-text 'metric'"),
])
def test_baseline_with_wrong_types_is_refused_not_passed(tmp_path, results, baseline, capsys, edit, expect):
    doc = json.loads(baseline.read_text())
    edit(doc)
    bad = tmp_path / "edited.json"
    bad.write_text(json.dumps(doc))
    line = _error_line(capsys, main(["check", "--results", str(results), "--baseline", str(bad)]))
    assert str(bad) in line and expect in line, line


def test_write_baseline_keeps_a_damaged_baseline_and_says_to_move_it(tmp_path, results, baseline, capsys):
    doc = json.loads(baseline.read_text())
    doc["version"] = 99
    baseline.write_text(json.dumps(doc))
    before = baseline.read_bytes()
    line = _error_line(capsys, main(["check", "--results", str(results), "--baseline", str(baseline), "--write-baseline"]))
    assert "version 99" in line and f"move or delete {baseline}" in line
    assert "recreate it with --write-baseline" not in line  # the advice must not be the command that just failed
    assert baseline.read_bytes() == before
    baseline.unlink()
    assert main(["check", "--results", str(results), "--baseline", str(baseline), "--write-baseline"]) == 0
    assert json.loads(baseline.read_text())["version"] == 1


_ASSETS = __import__("pathlib").Path(__file__).resolve().parents[1] / "digan" / "assets"


@pytest.mark.parametrize("args, says", [
    (["sample", "--teacher", str(_ASSETS / "tiny_student_64.pt"), "--n", "2"],
     ["is a DIGAN student checkpoint, not a StyleGAN2 teacher", f"--student {_ASSETS / 'tiny_student_64.pt'}"]),
    (["train", "--teacher", str(_ASSETS / "tiny_student_64.pt"), "--preset", "tiny", "--steps", "1"],
     ["is a DIGAN student checkpoint, not a StyleGAN2 teacher", "--student"]),
    (["sample", "--teacher", str(_ASSETS / "tiny_liftgan_64.pt"), "--n", "2"],
     ["is a liftgan 3D model checkpoint", f"--methods liftgan:{_ASSETS / 'tiny_liftgan_64.pt'}"]),
    (["sample", "--student", str(_ASSETS / "tiny_teacher_64.pt"), "--n", "2"],
     ["not a digan-bench student checkpoint but a StyleGAN2 teacher checkpoint", f"sample --teacher {_ASSETS / 'tiny_teacher_64.pt'}"]),
    (["export", "--student", str(_ASSETS / "tiny_teacher_64.pt"), "--n", "1"],
     ["not a digan-bench student checkpoint but a StyleGAN2 teacher checkpoint", "train --teacher"]),
], ids=["student-as-teacher", "student-as-train-teacher", "liftgan-as-teacher", "teacher-as-student", "teacher-as-export-student"])
def test_checkpoint_of_the_other_kind_says_where_it_goes(tmp_path, capsys, args, says):
    """A student given as --teacher (or a teacher as --student) says what the file is and which
    option takes it, instead of listing the keys the file lacks."""
    line = _error_line(capsys, main([*args, "--out", str(tmp_path / "o")]))
    assert all(s in line for s in says) and "keys:" not in line, line
    assert not (tmp_path / "o").exists()


def test_pickle_as_student_is_not_opened(tmp_path, capsys):
    pkl = tmp_path / "network-snapshot.pkl"
    pkl.write_bytes(b"\x80\x04N.")
    line = _error_line(capsys, main(["sample", "--student", str(pkl), "--n", "1", "--out", str(tmp_path / "o")]))
    assert f"{pkl} is a .pkl pickle, not a digan-bench student checkpoint" in line and "--teacher" in line, line
