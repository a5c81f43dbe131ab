"""Foundation: typed configs, atomic I/O, result records, CLI error handling."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest
import torch

from digan.cli import main
from digan.config import apply_overrides, config_hash, from_dict, load_config, save_config, to_dict
from digan.errors import DiganError
from digan.utils.io import atomic_dir, load_torch, save_torch, state_dict_hash, write_json
from evaluate.records import Record, load_records, rebuild_flat_views, record_path, write_records


@dataclass
class Inner:
    lr: float = 1e-4
    steps: int = 10
    kind: Literal["kan", "mlp"] = "kan"


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    yaws: tuple[float, ...] = (-30.0, 30.0)
    ckpt: Optional[str] = None
    flag: bool = False


def test_overrides_typed_and_nested():
    cfg = apply_overrides(Outer(), ["inner.lr=3e-3", "inner.steps=5", "yaws=[-45, 0, 45]", "flag=true", "inner.kind=mlp"])
    assert cfg.inner.lr == pytest.approx(3e-3) and cfg.inner.steps == 5
    assert cfg.yaws == (-45.0, 0.0, 45.0) and cfg.flag is True and cfg.inner.kind == "mlp"


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("inner.nope=1", "unknown config key 'inner.nope'"),
        ("inner.steps=abc", "expected an integer"),
        ("inner.kind=cnn", "choose one of"),
        ("flag=maybe", "expected true or false"),
        ("noequals", "key=value"),
    ],
)
def test_overrides_bad_input_one_line(override, fragment):
    with pytest.raises(DiganError) as e:
        apply_overrides(Outer(), [override])
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_config_roundtrip(tmp_path):
    cfg = apply_overrides(Outer(), ["ckpt=a.pt"])
    for suffix in (".json", ".yaml"):
        p = save_config(cfg, tmp_path / f"c{suffix}")
        assert load_config(Outer, p) == cfg
    assert config_hash(cfg) == config_hash(to_dict(cfg)) != config_hash(Outer())
    with pytest.raises(DiganError, match="unknown config key 'bogus'"):
        from_dict(Outer, {"bogus": 1})


def test_atomic_dir_keeps_old_on_failure(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as d:
        (d / "a.txt").write_text("first")
    with pytest.raises(DiganError, match="--force"):
        with atomic_dir(out):
            pass
    with pytest.raises(RuntimeError):
        with atomic_dir(out, force=True) as d:
            (d / "a.txt").write_text("second")
            raise RuntimeError("crash mid-way")
    assert (out / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp litter
    with atomic_dir(out, force=True) as d:
        (d / "a.txt").write_text("second")
    assert (out / "a.txt").read_text() == "second"


def test_corrupt_checkpoint_is_one_line_error(tmp_path):
    p = tmp_path / "ck.pt"
    save_torch(p, {"w": torch.ones(3)})
    assert torch.equal(load_torch(p)["w"], torch.ones(3))
    p.write_bytes(p.read_bytes()[:20])
    with pytest.raises(DiganError, match="corrupt") as e:
        load_torch(p)
    assert "\n" not in str(e.value)
    with pytest.raises(DiganError, match="not found"):
        load_torch(tmp_path / "missing.pt")
    # random bytes that happen to start like a pickle are a corrupt file, not a refused global
    p.write_bytes(b"garbage")
    with pytest.raises(DiganError, match="corrupt or not a PyTorch checkpoint .*nothing in it ran") as e:
        load_torch(p)
    assert "\n" not in str(e.value)


def test_state_dict_hash_sensitive():
    m = torch.nn.Linear(3, 2)
    h = state_dict_hash(m)
    assert h == state_dict_hash(m.state_dict())
    with torch.no_grad():
        m.bias[0] += 1e-6
    assert state_dict_hash(m) != h


def test_write_json_nan_becomes_null(tmp_path):
    p = write_json(tmp_path / "x.json", {"a": float("nan"), "b": torch.tensor(2.0)})
    assert json.loads(p.read_text()) == {"a": None, "b": 2.0}


def test_records_roundtrip_and_flat_views(tmp_path):
    recs = [
        Record("digan", "identity", "yaw=30", 0.71, unit="cos", higher_is_better=True, stats={"std": 0.1, "n": 10}),
        Record("digan", "identity", "yaw=-45", 0.61, unit="cos", higher_is_better=True),
        Record("digan", "identity", "overall", 0.66, unit="cos", higher_is_better=True),
    ]
    write_records(record_path(tmp_path, "digan", "identity"), recs)
    write_records(record_path(tmp_path, "sg2", "pose_mae"), [Record("sg2", "pose_mae", status="n/a", reason="no pose control")])
    got = rebuild_flat_views(tmp_path)
    assert [r.setting for r in got if r.method == "digan"] == ["yaw=-45", "yaw=30", "overall"]
    assert (tmp_path / "records.csv").read_text().count("\n") == 5
    assert len(load_records(tmp_path / "records.jsonl")) == 4
    with pytest.raises(ValueError):
        Record("m", "fid", status="ok", value=None)
    with pytest.raises(ValueError):
        Record("m", "fid", status="n/a")
    with pytest.raises(DiganError, match="no results"):
        load_records(tmp_path / "nothing")


def test_cli_unknown_option_and_command(capsys):
    assert main(["--bogus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1
    assert main(["no-such-command"]) == 2
    assert main(["--help"]) == 0


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "digan.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "digan-bench" in r.stdout


def test_atomic_outputs_have_ordinary_permissions(tmp_path):
    import os
    import stat

    mask = os.umask(0o022)
    try:
        f = write_json(tmp_path / "a.json", {"x": 1})
        with atomic_dir(tmp_path / "d") as d:
            (d / "x").write_text("1")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
