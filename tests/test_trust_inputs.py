"""Issue 12, items 8-10: bad input ends in one ``error:`` line and exit status 2.

* ``--out`` that is a file, lies under a file, or lies in a read-only folder, for every command
  that writes (run, train, train-teacher, data synth, sample, report, check);
* a student checkpoint without ``config`` (sample, run);
* ``check --metric nosuch`` and a baseline with no entries: comparing nothing is not a pass.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from digan.cli import main
from digan.student.testing import save_random_teacher

pytestmark = [pytest.mark.filterwarnings("ignore:VGG16 weights not found"), pytest.mark.filterwarnings("ignore:no torch face recogniser")]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("inputs")
    t = base / "t.pt"
    save_random_teacher(t, size=32, style_dim=32, width=8)
    data = base / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(data / f"{i}.png")
    res = base / "res"
    assert main(["run", "--methods", f"teacher:{t}", "--metrics", "speed", "--n-faces", "2", "--data", f"synth={data}",
                 "--out", str(res)]) == 0
    return {"base": base, "teacher": t, "data": data, "results": res}


@pytest.fixture()
def readonly_dir(tmp_path):
    """A folder this process cannot write into (chmod; as root, the immutable attribute)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    immutable = False
    probe = ro / ".probe"
    try:
        probe.write_text("x")
        probe.unlink()
        writable = True
    except OSError:
        writable = False
    if writable and shutil.which("chattr"):
        immutable = subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode == 0
        try:
            probe.write_text("x")
            probe.unlink()
        except OSError:
            writable = False
    if writable:
        pytest.skip("cannot make a read-only folder here (root without chattr)")
    yield ro
    if immutable:
        subprocess.run(["chattr", "-i", str(ro)])
    ro.chmod(0o755)


def _commands(env) -> dict:
    t, data, res = str(env["teacher"]), str(env["data"]), str(env["results"])
    return {
        "run": lambda o: ["run", "--methods", f"teacher:{t}", "--metrics", "speed", "--n-faces", "2", "--data", f"synth={data}", "--out", o],
        "train": lambda o: ["train", "--teacher", t, "--preset", "tiny", "--steps", "1", "--set", "train.w_stats_samples=64",
                            "--set", "loss.identity=0", "--out", o],
        "train-teacher": lambda o: ["train-teacher", "--data", data, "--out", o, "--steps", "1", "--batch", "2", "--set", "model.size=16",
                                    "--set", "model.channels={4: 8, 8: 8, 16: 8}", "--set", "w_mean_samples=16", "--set", "grid_n=1"],
        "synth": lambda o: ["data", "synth", "--out", o, "--n", "2", "--size", "64"],
        "sample": lambda o: ["sample", "--teacher", t, "--n", "1", "--out", o],
        "report": lambda o: ["report", "--results", res, "--out", o],
        "check --write-baseline": lambda o: ["check", "--results", res, "--baseline", o, "--write-baseline"],
        "check --json": lambda o: ["check", "--results", res, "--baseline", str(env["base"] / "baseline.json"), "--json", o],
    }


def _expect_one_line_error(capsys, rc) -> str:
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("kind", ["file", "under_file", "readonly"])
def test_every_writing_command_rejects_an_unusable_out(env, tmp_path, capsys, kind, request):
    main(["check", "--results", str(env["results"]), "--baseline", str(env["base"] / "baseline.json"), "--write-baseline"])
    a_file = tmp_path / "afile"
    a_file.write_text("not a folder")
    if kind == "file":
        out = a_file
    elif kind == "under_file":
        out = a_file / "x"
    else:
        out = request.getfixturevalue("readonly_dir") / "x"
    capsys.readouterr()
    for name, make in _commands(env).items():
        if kind == "file" and name == "check --json":
            continue  # a file is a valid --json target (it is replaced)
        line = _expect_one_line_error(capsys, main(make(str(out))))
        assert str(a_file if kind != "readonly" else out.parent) in line, (name, line)
    assert a_file.read_text() == "not a folder" or kind == "file"


# ------------------------------------------------------------------ item 9
def test_student_checkpoint_without_config_is_a_one_line_error(env, tmp_path, capsys):
    from digan.student.config import make_config
    from digan.student.train import train

    cfg = make_config("tiny", overrides=["train.w_stats_samples=64", "loss.identity=0", "train.steps=1", "train.grid_every=100"])
    train(cfg, tmp_path / "s", teacher_path=env["teacher"], show_progress=False)
    ck = torch.load(tmp_path / "s" / "student.pt", weights_only=True)
    del ck["config"]
    bad = tmp_path / "noconfig.pt"
    torch.save(ck, bad)
    capsys.readouterr()
    line = _expect_one_line_error(capsys, main(["sample", "--student", str(bad), "--n", "1", "--out", str(tmp_path / "o")]))
    assert str(bad) in line and "config" in line
    rc = main(["run", "--methods", f"digan:{bad}", "--metrics", "speed", "--n-faces", "1", "--data", f"synth={env['data']}",
               "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "config" in err and "KeyError" not in err and "Traceback" not in err, err


# ------------------------------------------------------------------ item 10
def test_check_refuses_to_compare_nothing(env, tmp_path, capsys):
    res = str(env["results"])
    b = tmp_path / "b.json"
    assert main(["check", "--results", res, "--baseline", str(b), "--write-baseline"]) == 0
    assert main(["check", "--results", res, "--baseline", str(b)]) == 0
    capsys.readouterr()
    line = _expect_one_line_error(capsys, main(["check", "--results", res, "--baseline", str(b), "--metric", "nosuch"]))
    assert "nosuch" in line
    doc = json.loads(b.read_text())
    doc["entries"] = []
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps(doc))
    line = _expect_one_line_error(capsys, main(["check", "--results", res, "--baseline", str(empty)]))
    assert "no entries" in line
