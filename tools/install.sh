#!/usr/bin/env bash
# Installs rrm (editable, with its compiled extension) into the current Python environment.
# Uses the torch already installed, else the CPU build torch==2.13.0 (a bare `pip install torch`
# would pull a multi-GB CUDA build). `--test` adds the test and benchmark dependencies, and the
# emulated CUDA build the tests run the CUDA kernels on (rrm_ops._emulated, docs/testing.md).
# Prints what it does; the compiler's output goes to a log file, shown in full if the build fails.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
say() { echo "[install] $*"; }

say "build tools (setuptools, wheel, ninja)"
python -m pip install -q "setuptools>=64" wheel ninja
if python -c "import torch" 2>/dev/null; then
  say "using the installed torch $(python -c 'import torch; print(torch.__version__)')"
else
  say "installing torch==2.13.0 (CPU build)"
  python -m pip install -q torch==2.13.0
fi
if [ "${1:-}" = "--test" ]; then
  say "test and benchmark dependencies (requirements-test.txt)"
  python -m pip install -q -r requirements-test.txt
  say "the tests also need the emulated CUDA build: compiling takes longer"
  export RRM_EMULATION=1
fi

log="$(mktemp -t rrm-build-XXXXXX.log)"
say "compiling the rrm_ops extension: about 4 minutes on 2 idle cores, longer on a busy machine"
say "(compiler output: $log)"
started=$SECONDS
if ! python -m pip install -v --no-build-isolation -e . >"$log" 2>&1; then
  cat "$log"
  say "FAILED: building rrm_ops did not succeed; the build output is above and in $log"
  exit 1
fi
grep -h "\[rrm setup\]" "$log" | sort -u | sed 's/^ *\[rrm setup\] /[install] setup.py: /' || true
say "compiled in $((SECONDS - started)) s"
python -c "import rrm_ops, torch; print(f'[install] done: rrm installed (torch {torch.__version__}); next: python -m rrm.train')"
