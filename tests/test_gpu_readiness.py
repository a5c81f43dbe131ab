"""GPU readiness without a GPU: the `gpu` extra, run.json's record of the onnxruntime providers,
and a dry run of scripts/gpu_check.py (``--cpu-smoke``) writing the JSON with every key."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STEPS = ("cuda_tests", "teacher_step", "student_step", "ddp_step", "renderer", "identity")


def test_gpu_extra_brings_onnxruntime_gpu():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    gpu = meta["project"]["optional-dependencies"]["gpu"]
    assert any(d.replace(" ", "").startswith("onnxruntime-gpu") for d in gpu)
    assert "cuda" in " ".join(meta["tool"]["pytest"]["ini_options"]["markers"])


def _tiny_onnx(path: Path) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_run_json_records_the_providers_of_the_face_models(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from digan.faces.onnx_models import open_session
    from digan.utils.provenance import run_info

    path = _tiny_onnx(tmp_path / "relu_probe.onnx")
    # a CUDA request uses the CUDA provider only where onnxruntime has it (the gpu extra)
    _, info = open_session(path, device="cuda")
    expect = "CUDAExecutionProvider" if "CUDAExecutionProvider" in ort.get_available_providers() else "CPUExecutionProvider"
    assert info.providers[0] == expect
    rec = run_info("test")["onnx_sessions"]
    assert rec["providers"]["relu_probe.onnx"] == info.providers
    assert set(rec["available"]) == set(ort.get_available_providers())
    assert "onnxruntime-gpu" in run_info("test")["versions"]


def _smoke(tmp_path: Path, only: str = "", p3d: bool = True) -> dict:
    out = tmp_path / "gpu_check.json"
    cmd = [sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--cpu-smoke", "--out", str(out), "--python", sys.executable]
    if only:
        cmd += ["--only", only]
    if not p3d:
        cmd += ["--p3d-python", str(tmp_path / "no-p3d-python")]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3700)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return json.loads(out.read_text())


def test_gpu_check_cpu_smoke_renderer_step(tmp_path):
    rep = _smoke(tmp_path, only="renderer", p3d=False)  # the full smoke (slow) takes .venv-p3d when present
    assert rep["mode"] == "cpu-smoke" and rep["ok"] is True
    assert {"torch", "cuda", "gpus"} <= set(rep["device"])
    r = rep["steps"]["renderer"]
    assert r["ok"] and r["rc"] == 0 and r["seconds"] > 0
    assert r["figures"]["torch_forward_backward_ms"] > 0 and "torch_peak_mem_mb" in r["figures"]
    assert r["figures"]["pytorch3d"].startswith("skipped: no ")


@pytest.mark.slow
@pytest.mark.timeout(3700)  # six toy steps, each a fresh process: minutes on a busy 2-core CPU
def test_gpu_check_cpu_smoke_every_step(tmp_path):
    rep = _smoke(tmp_path)
    assert set(rep["steps"]) == set(STEPS)
    assert rep["total_s"] > 0
    for name, r in rep["steps"].items():
        assert r["ok"] or "skipped" in r, (name, r)
        assert "figures" in r
    assert rep["steps"]["teacher_step"]["figures"]["step_ms"] > 0
    assert rep["steps"]["student_step"]["figures"]["ms_per_step"] > 0
    assert rep["steps"]["ddp_step"]["figures"]["mode"].startswith("2 processes")
    rf = rep["steps"]["renderer"]["figures"]
    assert "torch_over_pytorch3d" in rf or rf["pytorch3d"].startswith("skipped")
    if "skipped" not in rep["steps"]["identity"]:
        f = rep["steps"]["identity"]["figures"]
        assert f["n_faces"] == 4 and f["providers"] == ["CPUExecutionProvider"]
