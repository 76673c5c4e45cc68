#!/usr/bin/env bash
# Create .venv (once) and install medfss with its test extras into it.
# torch is pinned to the CPU wheel first so that no other package pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, medfss, monai, lightning, pytest, ants, h5py" 2>/dev/null; then
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet "torch==2.13.0"
  .venv/bin/pip install --quiet -e ".[test,logging,registration]"
fi
