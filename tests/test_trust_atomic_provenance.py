"""``sample --student`` and ``export`` write config.json and run.json inside the staging folder,
so the provenance is part of the atomic write: a kill while it is written leaves no output folder
(or the earlier, complete one under ``--force``), never a folder of images without its run.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from digan.cli import main

STUDENT = Path(__file__).resolve().parents[1] / "digan" / "assets" / "tiny_student_64.pt"

COMMANDS = {
    "sample": ["sample", "--student", str(STUDENT), "--n", "1", "--yaws", "0", "--device", "cpu"],
    "export": ["export", "--student", str(STUDENT), "--n", "1", "--formats", "ply", "--device", "cpu"],
}


def _killed_in_provenance(monkeypatch):
    """The command is killed after config.json, before run.json (patched where the two commands
    look ``write_command_info`` up, so that no module keeps the patched function afterwards)."""
    import digan.cli.common
    import digan.cli.student

    def killed(out, kind, config, **k):
        (Path(out) / "config.json").write_text(json.dumps(config, default=str))
        raise KeyboardInterrupt

    monkeypatch.setattr(digan.cli.common, "write_command_info", killed)
    monkeypatch.setattr(digan.cli.student, "write_command_info", killed)


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_kill_while_writing_provenance_leaves_no_folder(cmd, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    _killed_in_provenance(monkeypatch)
    assert main([*COMMANDS[cmd], "--out", str(out)]) == 130
    assert not out.exists(), sorted(p.name for p in out.iterdir())
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_kill_while_writing_provenance_keeps_the_earlier_folder(cmd, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert main([*COMMANDS[cmd], "--out", str(out)]) == 0
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert {"config.json", "run.json"} <= set(before)
    kind = json.loads((out / "run.json").read_text())["kind"]
    _killed_in_provenance(monkeypatch)
    assert main([*COMMANDS[cmd], "--seed", "1", "--out", str(out), "--force"]) == 130
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
    assert json.loads((out / "run.json").read_text())["kind"] == kind
    assert json.loads((out / "config.json").read_text())["seed"] == 0
