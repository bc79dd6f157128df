#!/usr/bin/env bash
# One check of the CUDA kernels on a machine with a GPU, in about 8 minutes; prints one table.
#
# Steps:
#   1. build rrm_ops._C with its CUDA kernels for this GPU's architecture, and the emulated
#      CUDA build the tests import, in place (python setup.py build_ext --inplace: the build
#      writes build/ and rrm_ops/*.so into this checkout, like tools/install.sh);
#   2. check that every rrm_ops op has a CUDA kernel registered;
#   3. run the CUDA variants of the equivalence tests (tests/test_cuda_equivalence.py -k "not emulated"):
#      the real CUDA kernels against the CPU kernels; a skipped test fails this step;
#   4. when compute-sanitizer is installed, run its memcheck and racecheck tools on one small
#      call of every op (python tools/gpu_check.py small-case);
#   5. time the dense CRF (and pydensecrf on the same input), the dense energy loss, mining and
#      one training step of the default and of the ResNet-38 setting on the GPU, with the host
#      synchronisations of one call (python tools/gpu_check.py measure).
#
# Usage: tools/gpu_check.sh   (from any directory, in the Python environment rrm is installed in,
#        with a CUDA build of torch and nvcc on the PATH)
# Environment (all optional):
#   PYTHON     interpreter (default python)
#   MAX_JOBS   parallel compile jobs (default: number of cores)
#   RRM_GPU_CHECK_ROWS  file the table's rows are written to (default: a temporary file)
# Exit codes: 0 every step passed; 1 a step failed (the table says which); 2 no usable GPU,
#   CUDA torch or nvcc.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
TOOL_NAME=gpu_check
# shellcheck source=tools/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROWS="${RRM_GPU_CHECK_ROWS:-$(mktemp "${TMPDIR:-/tmp}/rrm-gpu-check.XXXXXX")}"
: >"$ROWS"
LOGS="$(mktemp -d "${TMPDIR:-/tmp}/rrm-gpu-check-logs.XXXXXX")"
FAILED=0
STEP_T0=0

# row WHAT RESULT TIME [SYNCS]: one line of the final table.
row() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:--}" >>"$ROWS"; }
step_begin() {
  STEP_T0=$SECONDS
  log "== $1"
}
# step_end WHAT STATUS [RESULT]: records the step's row; a non-zero status fails the check.
step_end() {
  local result="${3:-}"
  if [ "$2" -ne 0 ]; then
    FAILED=1
    result="FAILED${result:+ ($result)}"
  fi
  row "$1" "${result:-ok}" "$((SECONDS - STEP_T0)) s"
}

cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
command -v nvcc >/dev/null 2>&1 || die 2 "nvcc is not on the PATH"
ARCH="$("$PYTHON" -c 'import torch
assert torch.version.cuda, "torch is not a CUDA build"
assert torch.cuda.is_available(), "CUDA is not available"
major, minor = torch.cuda.get_device_capability()
print(f"{major}.{minor}")' 2>"$LOGS/preflight.log")" || die 2 "no usable GPU: $(tail -n 1 "$LOGS/preflight.log")"
log "GPU: $("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name())') (sm ${ARCH/./}), torch $("$PYTHON" -c 'import torch; print(torch.__version__)')"

step_begin "build with CUDA (sm ${ARCH/./}) and the emulation"
RRM_FORCE_CUDA=1 RRM_EMULATION=1 TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
  "$PYTHON" setup.py build_ext --inplace >"$LOGS/build.log" 2>&1
status=$?
[ "$status" -eq 0 ] || tail -n 40 "$LOGS/build.log" >&2
step_end "build with CUDA (sm ${ARCH/./})" "$status"
if [ "$status" -ne 0 ]; then
  "$PYTHON" tools/gpu_check.py table "$ROWS"
  die 1 "the CUDA build failed (log above)"
fi

step_begin "every op has a CUDA kernel"
"$PYTHON" - <<'EOF' 2>&1 | tee "$LOGS/registered.log"
import torch
import rrm_ops

ops = sorted(name for name in torch._C._dispatch_get_all_op_names() if name.startswith("rrm_ops::"))
missing = [op for op in ops if not torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA")]
print(f"{len(ops)} ops, without a CUDA kernel: {missing or 'none'}")
raise SystemExit(1 if missing or not ops else 0)
EOF
step_end "every op has a CUDA kernel" "${PIPESTATUS[0]}"

step_begin "CUDA vs CPU equivalence tests"
"$PYTHON" -m pytest -q -rs -p no:cacheprovider tests/test_cuda_equivalence.py -k "not emulated" 2>&1 | tee "$LOGS/tests.log"
status=${PIPESTATUS[0]}
SUMMARY="$(grep -E '^[0-9]+ (passed|failed|skipped|error)|in [0-9.]+s' "$LOGS/tests.log" | tail -n 1)"
if grep -qE '[0-9]+ skipped' <<<"$SUMMARY"; then
  status=1  # here every CUDA variant must run
fi
step_end "CUDA vs CPU equivalence tests" "$status" "$(sed -E 's/^=+ //; s/ =+$//; s/ in [0-9.]+s.*//' <<<"$SUMMARY")"

if command -v compute-sanitizer >/dev/null 2>&1; then
  for tool in memcheck racecheck; do
    step_begin "compute-sanitizer $tool, small case"
    compute-sanitizer --tool "$tool" --error-exitcode 1 "$PYTHON" tools/gpu_check.py small-case --device cuda \
      >"$LOGS/$tool.log" 2>&1
    status=$?
    tail -n 3 "$LOGS/$tool.log"
    step_end "compute-sanitizer $tool, small case" "$status"
  done
else
  row "compute-sanitizer memcheck / racecheck" "not installed" "-"
fi

step_begin "measure on cuda"
"$PYTHON" tools/gpu_check.py measure --device cuda --rows "$ROWS" >"$LOGS/measure.log" 2>&1
status=$?
[ "$status" -eq 0 ] || tail -n 20 "$LOGS/measure.log" >&2
step_end "measurements" "$status"

echo
"$PYTHON" tools/gpu_check.py table "$ROWS"
log "logs: $LOGS; rows: $ROWS"
[ "$FAILED" -eq 0 ] || die 1 "a step failed (see the table)"
log "OK"
