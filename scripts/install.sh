#!/usr/bin/env bash
# Create .venv (if missing) and install digan-bench with its test extras.
# torch/torchvision are pinned to the builds that pip finds on the development machines; on any
# other machine pip fetches them from PyPI. Override with TORCH_SPEC="torch torchvision".
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q ${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
.venv/bin/python -m pip install -q -e '.[dev]'
echo "digan-bench installed in $(pwd)/.venv"
