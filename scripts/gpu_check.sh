#!/usr/bin/env bash
# GPU readiness in one prepared script: every CUDA path of digan-bench, one JSON of figures.
#
#   scripts/gpu_check.sh [--out gpu_check.json] [--with-p3d] [--only STEP,...] [--cpu-smoke]
#
# On a fresh CUDA machine: installs .venv when missing (scripts/install.sh), swaps in
# onnxruntime-gpu (the `gpu` extra) when onnxruntime lacks the CUDA execution provider, builds
# .venv-p3d with --with-p3d (a ~5 GB download; without it the PyTorch3D figures are skipped unless
# .venv-p3d already exists), then runs scripts/gpu_check.py: CUDA-marked tests, one teacher and one
# student training step at 256 px (paper configs), a 2-process DDP run, renderer fwd+bwd at
# 256 px batch 16 (torch and PyTorch3D backends), the identity metric for 1,000 faces x 7 yaws on
# onnxruntime's CUDA provider. Steps are time-boxed to finish within 8 minutes after the install.
# --cpu-smoke: the same steps on the CPU at toy sizes (a dry run; the JSON has the same keys).
# Exit status 0 when every step passed; the JSON says which did not and why.
set -uo pipefail
cd "$(dirname "$0")/.."

args=()
with_p3d=0
smoke=0
for a in "$@"; do
    case "$a" in
        --with-p3d) with_p3d=1 ;;
        --cpu-smoke) smoke=1; args+=("$a") ;;
        *) args+=("$a") ;;
    esac
done

if [ ! -x .venv/bin/digan-bench ]; then
    echo "gpu_check: installing .venv (scripts/install.sh)"
    ./scripts/install.sh || { echo "gpu_check: install failed"; exit 1; }
fi

if [ "$smoke" -eq 0 ] && .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    if ! .venv/bin/python -c "import onnxruntime as o, sys; sys.exit(0 if 'CUDAExecutionProvider' in o.get_available_providers() else 1)" 2>/dev/null; then
        # onnxruntime and onnxruntime-gpu ship the same module: remove the CPU one first
        echo "gpu_check: installing onnxruntime-gpu (the gpu extra) for the face models"
        .venv/bin/python -m pip uninstall -y -q onnxruntime onnxruntime-gpu
        .venv/bin/python -m pip install -q 'onnxruntime-gpu>=1.16' \
            || { echo "gpu_check: onnxruntime-gpu install FAILED; putting the CPU onnxruntime back"; .venv/bin/python -m pip install -q 'onnxruntime>=1.16'; }
    fi
fi

if [ "$with_p3d" -eq 1 ]; then
    ./scripts/install_p3d.sh || echo "gpu_check: PyTorch3D env install FAILED; the PyTorch3D figures will be skipped"
fi

exec .venv/bin/python scripts/gpu_check.py "${args[@]}"
