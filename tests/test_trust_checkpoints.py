"""Issue 12, item 1: a checkpoint is data, never code.

Every file below would write a marker file if unpickled with ``weights_only=False`` or a plain
``pickle.load``. Each must be refused with one ``error: PATH holds objects a checkpoint may not
contain (...)`` line, exit status 2, and the marker must not exist afterwards.
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import random

import numpy as np
import pytest
import torch

from digan.cli import main
from digan.errors import DiganError
from digan.utils.io import load_torch, save_torch


class _Payload:
    """Unpickling this calls ``builtins.exec`` (writes the marker)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


class _SystemPayload:
    """Unpickling this calls ``os.system`` (a shell command)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_pt(path, marker, system=False):
    payload = (_SystemPayload if system else _Payload)(marker)
    torch.save({"g_ema": {"style.1.weight": torch.zeros(2, 2)}, "format": "digan-student/1", "config": {}, "x": payload}, path)
    return path


def _evil_pkl(path, marker):
    with open(path, "wb") as f:
        pickle.dump({"G_ema": _Payload(marker)}, f, protocol=4)
    return path


def _refused(capsys, path, rc):
    err = capsys.readouterr().err
    assert rc == 2, err
    line = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(line) == 1 and f"{path} holds objects a checkpoint may not contain (" in line[0], err
    assert "Traceback" not in err
    return line[0]


@pytest.mark.parametrize("system", [False, True])
def test_library_loader_refuses_code_and_runs_nothing(tmp_path, system):
    marker = tmp_path / "MARKER"
    p = _evil_pt(tmp_path / "evil.pt", marker, system=system)
    with pytest.raises(DiganError, match=r"holds objects a checkpoint may not contain \((builtins\.exec|posix\.system|os\.system)"):
        load_torch(p)
    assert not marker.exists()


def test_own_checkpoint_contents_still_load(tmp_path):
    """What the project's checkpoints hold (Namespace args, numpy/python RNG state, optimiser
    state) passes the allowlist unchanged."""
    opt = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))])
    obj = {"args": argparse.Namespace(size=64, latent=32), "rng": {"numpy": np.random.get_state(), "python": random.getstate(),
           "torch": torch.get_rng_state()}, "optimizer": opt.state_dict(), "w": torch.arange(4.0), "f": np.float64(2.5)}
    p = save_torch(tmp_path / "ok.pt", obj)
    back = load_torch(p)
    assert back["args"].size == 64 and back["f"] == 2.5
    np.random.set_state(back["rng"]["numpy"])  # a usable numpy state
    assert np.array_equal(back["rng"]["numpy"][1], np.random.get_state()[1])
    assert torch.equal(back["w"], torch.arange(4.0))


def test_cli_teacher_student_train_and_run_refuse_malicious_pt(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    evil = _evil_pt(tmp_path / "evil.pt", marker)
    out = tmp_path / "o"
    _refused(capsys, evil, main(["sample", "--teacher", str(evil), "--n", "1", "--out", str(out / "a")]))
    _refused(capsys, evil, main(["sample", "--student", str(evil), "--n", "1", "--out", str(out / "b")]))
    _refused(capsys, evil, main(["train", "--teacher", str(evil), "--preset", "tiny", "--steps", "1", "--out", str(out / "c")]))
    rc = main(["run", "--methods", f"digan:{evil}", "--metrics", "speed", "--n-faces", "1", "--out", str(out / "d")])
    err = capsys.readouterr().err
    assert rc == 2 and f"{evil} holds objects a checkpoint may not contain (" in err, err
    assert "Traceback" not in err
    assert not marker.exists()


def test_cli_refuses_exec_in_nvidia_pickle(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    evil = _evil_pkl(tmp_path / "network-snapshot.pkl", marker)
    line = _refused(capsys, evil, main(["sample", "--teacher", str(evil), "--n", "1", "--out", str(tmp_path / "s")]))
    assert "builtins.exec" in line
    assert not marker.exists()


def test_nvidia_pickle_storage_cannot_smuggle_a_full_torch_load(tmp_path):
    """Tensors in a plain pickle carry their storage as torch.save bytes that torch itself would
    read with weights_only=False: ours reads them as weights only."""
    from digan.teacher.checkpoint import read_ada_pickle

    marker = tmp_path / "MARKER"
    inner = io.BytesIO()
    torch.save(_Payload(marker), inner, _use_new_zipfile_serialization=False)

    class Smuggle:
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (inner.getvalue(),))

    p = tmp_path / "smuggle.pkl"
    with open(p, "wb") as f:
        pickle.dump({"G_ema": Smuggle()}, f, protocol=4)
    with pytest.raises(DiganError):
        read_ada_pickle(p)
    assert not marker.exists()


def test_pickled_recogniser_module_is_refused(tmp_path):
    from digan.student.identity import build_recognizer

    marker = tmp_path / "MARKER"
    p = _evil_pt(tmp_path / "rec.pt", marker)
    with pytest.raises(DiganError, match="not a TorchScript file"):
        build_recognizer(f"torch:{p}")
    assert not marker.exists()
