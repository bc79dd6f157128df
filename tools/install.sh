#!/usr/bin/env bash
# Installs rrm (editable, with its compiled extension) into the current Python environment.
# Uses the torch already installed, else the CPU build torch==2.13.0 (a bare `pip install torch`
# would pull a multi-GB CUDA build). `--test` adds the test and benchmark dependencies, and the
# emulated CUDA build the tests run the CUDA kernels on (rrm_ops._emulated, docs/testing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
python -m pip install -q "setuptools>=64" wheel ninja
python -c "import torch" 2>/dev/null || python -m pip install -q torch==2.13.0
if [ "${1:-}" = "--test" ]; then
  python -m pip install -q -r requirements-test.txt
  export RRM_EMULATION=1
fi
python -m pip install -q --no-build-isolation -e .
python -c "import rrm_ops, torch; print(f'rrm installed (torch {torch.__version__})')"
