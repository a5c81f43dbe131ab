#!/usr/bin/env bash
# Create .venv-p3d: a second environment with real PyTorch3D, used by CI to test the project's
# PyTorch3D backend against the library itself (tests/test_render_backends.py).
#
# PyTorch3D has no official PyPI wheels; PyPI's `easypytorch3d==0.7.9.post1` is a prebuilt
# PyTorch3D 0.7.9 that installs beside `torch==2.12.1` (a CUDA build, ~5 GB download; it runs on
# the CPU without a GPU) and `torchvision==0.27.1`. The project itself is made importable from
# this checkout by a .pth file (an editable install without dependencies and without a build, so
# it cannot race the main install's `pip install -e .` when CI runs both at once; the renderer
# needs only torch and numpy, the face/metric stack is not needed for the backend tests), plus
# pytest.
#
# Idempotent: an environment that already imports pytorch3d and digan is left as it is.
# Override the venv path with P3D_VENV, the interpreter with PYTHON, the pins with P3D_SPEC.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${P3D_VENV:-.venv-p3d}
SPEC=${P3D_SPEC:-torch==2.12.1 torchvision==0.27.1 easypytorch3d==0.7.9.post1}

case "$VENV" in /*) ;; *) VENV="$(pwd)/$VENV" ;; esac
# (checked from / so that the checkout is not importable merely as the current directory)
if [ -x "$VENV/bin/python" ] && (cd / && "$VENV/bin/python" -c "import pytorch3d, pytest, numpy, digan.render") 2>/dev/null; then
    echo "PyTorch3D environment already present: $VENV"
    exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q $SPEC
"$VENV/bin/python" -m pip install -q numpy 'pytest>=8' 'pytest-timeout>=2.2' pyyaml
site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$(pwd)" > "$site/digan_bench_checkout.pth"
(cd / && "$VENV/bin/python" -c "import torch, pytorch3d, pytorch3d.renderer, digan.render; print('torch', torch.__version__, 'pytorch3d', pytorch3d.__version__)")
echo "PyTorch3D environment installed in $VENV"
