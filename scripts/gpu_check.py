"""GPU readiness check: every CUDA path of digan-bench in one run, one JSON of figures.

Run through ``scripts/gpu_check.sh`` (which installs what is missing first). Steps, each a fresh
subprocess with its own time limit so that one failure cannot hide the others:

=================  =========================================================================
``cuda_tests``     ``pytest -m cuda`` (tests that need a GPU; they skip without one)
``teacher_step``   ``bench teacher``: one StyleGAN2 training step, ``standard`` preset (rosinality /
                   paper config), 256 px, batch 16 (incl. lazy R1 and path-length terms)
``student_step``   ``bench student``: one DIGAN training step, ``paper`` preset, 256 px, batch 8
``ddp_step``       ``torchrun --nproc_per_node 2 ... train-teacher``: a 2-process DDP run of 2 steps
                   (NCCL on two GPUs; on one GPU both ranks share it through gloo)
``renderer``       ``bench renderer``: fwd+bwd at 256 px, batch 16, torch backend, and PyTorch3D's
                   (binned rasterizer) from ``.venv-p3d`` when that environment exists
``identity``       ``bench identity``: the identity metric for 1,000 faces x 7 yaws with
                   onnxruntime's CUDA execution provider
=================  =========================================================================

``--cpu-smoke`` runs the same steps on the CPU at toy sizes (a dry run of the script itself: the
JSON has the same keys); ``--only a,b`` runs a subset. Exit status 0 when every step that ran
passed (a step skipped for a missing optional part, e.g. no PyTorch3D, is not a failure).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS = ("cuda_tests", "teacher_step", "student_step", "ddp_step", "renderer", "identity")
FACE_MODELS = REPO.parent / "shared" / "data" / "face-models"


def _run(cmd: list[str], timeout: float, env: dict | None = None, cwd: Path = REPO) -> dict:
    """Run ``cmd`` in its own process group; past ``timeout`` the whole group is killed (torchrun's
    workers included, which a plain subprocess timeout would leave running)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, _ = p.communicate()
        rc = 124
        out = (out or "") + f"\n[timed out after {timeout:.0f} s]"
    return {"cmd": " ".join(cmd), "rc": rc, "seconds": round(time.perf_counter() - t0, 2), "log_tail": (out or "")[-1500:]}


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _cli(py: str) -> list[str]:
    return [py, "-m", "digan.cli"]


def _device_info(py: str) -> dict:
    code = (
        "import json, torch; d = {'torch': torch.__version__, 'cuda': torch.cuda.is_available(), "
        "'gpus': [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}\n"
        "try:\n import onnxruntime as o; d['onnxruntime'] = o.__version__; d['onnx_providers'] = o.get_available_providers()\n"
        "except Exception as e: d['onnxruntime'] = repr(e)\n"
        "print(json.dumps(d))"
    )
    r = _run([py, "-c", code], 120)
    try:
        return json.loads(r["log_tail"].strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": r["log_tail"]}


def step_cuda_tests(a, py, tmp, dev) -> dict:
    r = _run([py, "-m", "pytest", "-m", "cuda", "-p", "no:cacheprovider", "-q", "-ra", "tests"], a.step_timeout)
    # pytest: 0 passed, 5 nothing collected (no test carries the marker) -- both fine for a dry run
    r["ok"] = r["rc"] == 0 or (a.cpu_smoke and r["rc"] == 5)
    last = [ln for ln in r["log_tail"].splitlines() if " passed" in ln or " skipped" in ln or " failed" in ln]
    r["figures"] = {"summary": last[-1].strip("= ") if last else ""}
    return r


def step_teacher(a, py, tmp, dev) -> dict:
    out = tmp / "teacher.json"
    case = "tiny@32x2:cpu" if a.cpu_smoke else "standard@256x16:cuda"
    r = _run(_cli(py) + ["bench", "teacher", "--cases", case, "--repeats", "1", "--out", str(out)], a.step_timeout)
    res = (_json(out) or {}).get("results", [])
    ok_res = [x for x in res if "skipped" not in x]
    r["ok"] = r["rc"] == 0 and bool(ok_res)
    r["figures"] = {k: ok_res[0].get(k) for k in ("preset", "size", "batch", "device_name", "step_ms", "r1_ms", "pl_ms", "amortized_ms", "peak_mem_mb")} if ok_res else {}
    return r


def step_student(a, py, tmp, dev) -> dict:
    out = tmp / "student.json"
    args = ["--presets", "tiny", "--sizes", "64", "--device", "cpu", "--batch", "2", "--threads", "1"] if a.cpu_smoke else \
        ["--presets", "paper", "--sizes", "256", "--device", "cuda", "--batch", "8"]
    r = _run(_cli(py) + ["bench", "student", *args, "--repeats", "1", "--out", str(out)], a.step_timeout)
    res = (_json(out) or {}).get("results", [])
    r["ok"] = r["rc"] == 0 and bool(res)
    r["figures"] = {k: res[0].get(k) for k in ("preset", "size", "batch", "device_name", "ms_per_step", "peak_mem_mb", "faces_per_s")} if res else {}
    return r


def step_ddp(a, py, tmp, dev) -> dict:
    data = tmp / "ddp_data"
    prep = _run(_cli(py) + ["data", "synth", "--out", str(data), "--n", "8", "--size", "64", "--seed", "0"], a.step_timeout)
    if prep["rc"] != 0:
        return {**prep, "ok": False, "figures": {"error": "could not make the training images"}}
    images = data / "images" if (data / "images").is_dir() else data
    n_gpu = len(dev.get("gpus", [])) if not a.cpu_smoke else 0
    env = {"OMP_NUM_THREADS": "1"}
    if a.cpu_smoke:
        device, mode = "cpu", "2 processes, gloo, CPU"
    elif n_gpu >= 2:
        device, mode = "auto", "2 processes, NCCL, 2 GPUs"
    else:
        device, mode = "cuda:0", "2 processes sharing 1 GPU, gloo"
        env["DIGAN_BENCH_DIST_BACKEND"] = "gloo"
    torchrun = [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    out = tmp / "ddp_run"
    r = _run(torchrun + ["-m", "digan.cli", "train-teacher", "--data", str(images), "--out", str(out), "--preset", "tiny",
                         "--steps", "2", "--batch", "4", "--device", device], a.step_timeout, env=env)
    r["ok"] = r["rc"] == 0 and (out / "teacher.pt").is_file()
    r["figures"] = {"mode": mode, "wall_s": r["seconds"], "steps": 2, "global_batch": 4}
    return r


def step_renderer(a, py, tmp, dev) -> dict:
    out = tmp / "renderer.json"
    case, device = ("2x32", "cpu") if a.cpu_smoke else ("16x256", "cuda")
    extra = ["--threads", "1"] if a.cpu_smoke else []
    r = _run(_cli(py) + ["bench", "renderer", "--cases", case, "--device", device, "--backend", "torch", "--repeats", "1" if a.cpu_smoke else "5",
                         "--out", str(out), *extra], a.step_timeout)
    res = (_json(out) or {}).get("results", [])
    r["ok"] = r["rc"] == 0 and bool(res)
    fig = {}
    if res:
        fig = {"torch_" + k: res[0][k] for k in ("forward_ms", "forward_backward_ms", "peak_mem_mb", "device_name")}
    p3d_py = Path(a.p3d_python)
    if p3d_py.exists():
        b, s = (int(x) for x in case.split("x"))
        code = (
            "import json, sys; from digan.render.bench import BenchConfig, run_renderer_bench\n"
            f"res = run_renderer_bench(BenchConfig(cases=[({b}, {s})], repeats={1 if a.cpu_smoke else 5}, devices=['{device}'], backend='both', threads={1 if a.cpu_smoke else 0}))\n"
            "print('RESULT ' + json.dumps(res))"
        )
        p = _run([str(p3d_py), "-c", code], a.step_timeout)
        line = [ln for ln in p["log_tail"].splitlines() if ln.startswith("RESULT ")]
        if p["rc"] == 0 and line:
            both = json.loads(line[-1][7:])
            p3 = [x for x in both if x["backend"] == "pytorch3d"]
            tq = [x for x in both if x["backend"] == "torch"]
            if p3 and tq:
                fig.update({
                    "pytorch3d_forward_ms": p3[0]["forward_ms"], "pytorch3d_forward_backward_ms": p3[0]["forward_backward_ms"],
                    "pytorch3d_peak_mem_mb": p3[0]["peak_mem_mb"], "p3d_env_torch_forward_backward_ms": tq[0]["forward_backward_ms"],
                    # torch backend's fwd+bwd time over PyTorch3D's, same process (target on GPU: <= 1.5)
                    "torch_over_pytorch3d": tq[0]["forward_backward_ms"] / p3[0]["forward_backward_ms"],
                })
            else:
                fig["pytorch3d"] = "pytorch3d does not import in .venv-p3d"
        else:
            fig["pytorch3d"] = f"failed (rc {p['rc']}): {p['log_tail'][-300:]}"
            r["ok"] = False
    else:
        fig["pytorch3d"] = f"skipped: no {p3d_py} (scripts/install_p3d.sh, or gpu_check.sh --with-p3d)"
    r["figures"] = fig
    return r


def step_identity(a, py, tmp, dev) -> dict:
    out = tmp / "identity.json"
    args = ["--n-faces", "4" if a.cpu_smoke else "1000", "--device", "cpu" if a.cpu_smoke else "cuda"]
    buffalo = Path("~/.insightface/models/buffalo_l/det_10g.onnx").expanduser()
    if not buffalo.is_file():
        if not (FACE_MODELS / "det_500m.onnx").is_file():
            return {"ok": False, "skipped": f"no face models (buffalo_l or {FACE_MODELS})", "figures": {}, "rc": None, "seconds": 0}
        args += ["--detector", str(FACE_MODELS / "det_500m.onnx"), "--recognizer", str(FACE_MODELS / "mobilefacenet_arcface_w128.onnx")]
    if a.cpu_smoke:
        args += ["--threads", "1"]
    elif "CUDAExecutionProvider" not in dev.get("onnx_providers", []):
        return {"ok": False, "rc": None, "seconds": 0, "figures": {},
                "skipped": "onnxruntime has no CUDAExecutionProvider: pip install 'digan-bench[gpu]' (see README, GPU)"}
    r = _run(_cli(py) + ["bench", "identity", *args, "--out", str(out)], a.step_timeout, env={"DIGAN_BENCH_OFFLINE": "1"})
    res = (_json(out) or {}).get("results", [])
    r["ok"] = r["rc"] == 0 and bool(res) and (a.cpu_smoke or "CUDAExecutionProvider" in res[0].get("providers", []))
    r["figures"] = {k: res[0].get(k) for k in ("device", "n_faces", "views", "wall_s", "wall_s_1000_faces", "images_per_s", "providers",
                                               "detector", "recognizer", "identity_overall", "missed")} if res else {}
    return r


RUNNERS = {"cuda_tests": step_cuda_tests, "teacher_step": step_teacher, "student_step": step_student, "ddp_step": step_ddp,
           "renderer": step_renderer, "identity": step_identity}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_check.json", help="JSON of figures to write (default gpu_check.json)")
    ap.add_argument("--cpu-smoke", action="store_true", help="dry run on the CPU at toy sizes (same steps, same JSON keys)")
    ap.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(STEPS)}")
    ap.add_argument("--python", default=str(REPO / ".venv" / "bin" / "python"), help="interpreter of the main environment")
    ap.add_argument("--p3d-python", default=str(REPO / ".venv-p3d" / "bin" / "python"),
                    help="interpreter of the PyTorch3D environment (its figures are skipped when it does not exist)")
    ap.add_argument("--step-timeout", type=float, default=None, help="seconds per step at most (default 150; 900 with --cpu-smoke)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for all steps; later steps are skipped past it (default 420; 3600 with --cpu-smoke, "
                         "whose toy steps still take minutes on a busy CPU)")
    a = ap.parse_args(argv)
    if a.step_timeout is None:
        a.step_timeout = 900.0 if a.cpu_smoke else 150.0
    if a.budget is None:
        a.budget = 3600.0 if a.cpu_smoke else 420.0
    steps = [s.strip() for s in a.only.split(",") if s.strip()] or list(STEPS)
    bad = [s for s in steps if s not in RUNNERS]
    if bad:
        ap.error(f"unknown step(s) {bad}; choose from {', '.join(STEPS)}")
    py = a.python if Path(a.python).exists() else sys.executable
    t0 = time.perf_counter()
    dev = _device_info(py)
    if not a.cpu_smoke and not dev.get("cuda"):
        print("gpu_check: no CUDA device visible to torch; use --cpu-smoke for a dry run on the CPU", file=sys.stderr)
    report = {
        "mode": "cpu-smoke" if a.cpu_smoke else "gpu",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "host": platform.node(),
        "device": dev,
        "steps": {},
    }
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    try:
        for name in steps:
            left = a.budget - (time.perf_counter() - t0)
            if left < 10:
                report["steps"][name] = {"ok": False, "skipped": "time budget spent", "figures": {}}
                continue
            a.step_timeout = min(a.step_timeout, left)
            print(f"gpu_check: {name} ...", flush=True)
            res = RUNNERS[name](a, py, tmp, dev)
            report["steps"][name] = res
            print(f"gpu_check: {name}: {'ok' if res.get('ok') else 'FAILED' if not res.get('skipped') else 'skipped: ' + res['skipped']}"
                  f" ({res.get('seconds', 0):.1f} s) {json.dumps(res.get('figures', {}))}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report["total_s"] = round(time.perf_counter() - t0, 1)
    report["ok"] = all(r.get("ok") or ("skipped" in r and a.cpu_smoke) for r in report["steps"].values())
    Path(a.out).write_text(json.dumps(report, indent=1))
    print(f"gpu_check: {'all steps passed' if report['ok'] else 'FAILURES'} in {report['total_s']} s; figures in {a.out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
