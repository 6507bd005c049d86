#!/usr/bin/env bash
# Install napari-sam2-worms with its extras (default "all") into the current Python.
# torch/torchvision come from the package registry; sam2 is source-only and is built
# without its optional CUDA extension (SAM2_BUILD_CUDA=0), with no build isolation so
# that it builds against the torch already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-all}"
PY="${PYTHON:-python3}"
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

if ! "$PY" -c "import torch, torchvision.ops; torchvision.ops.nms" >/dev/null 2>&1 \
   || ! "$PY" -c "import torch, torchvision, torchvision.ops as o, torch as t; o.nms(t.zeros(1,4), t.zeros(1), 0.5)" >/dev/null 2>&1; then
  echo "installing torch and torchvision" >&2
  pip_install --upgrade torch torchvision
fi
if ! "$PY" -c "import sam2.build_sam" >/dev/null 2>&1; then
  echo "building sam2 (SAM2_BUILD_CUDA=0)" >&2
  pip_install setuptools wheel
  SAM2_BUILD_CUDA=0 pip_install --no-build-isolation "sam2>=1.0"
fi
pip_install -e ".[${EXTRAS}]"
