#!/usr/bin/env bash
# Compile every csrc/**/*_cuda.cu with plain nvcc (no torch headers), warnings as errors.
#
# CUDA sources are self-contained (CUDA runtime, CUB/Thrust and the project's own headers only;
# docs/design.md#self-contained-cuda-sources), so each one must compile with `nvcc -c` on any
# machine with nvcc. This checks exactly that, for sm_80 and sm_90, into a temporary folder that
# is removed afterwards.
# It also emits each file's PTX with the same flags and fails if any function holds a fused
# multiply-add (fma.*): the kernels promise the CPU build's bits (docs/design.md), which a
# contracted a*b+c breaks, and so does a call of CUDA's libm (logf, powf, expf, ...), whose
# bodies use explicit FMAs; the kernels take log and pow from csrc/common/float_math.h instead.
# No GPU is needed.
#
# Usage: tools/check_cuda_compile.sh            (from any directory)
# Environment (all optional):
#   NVCC                 nvcc to use (default: nvcc on PATH)
#   RRM_NVCC_JOBS        parallel nvcc processes (default: number of cores)
#   RRM_NVCC_STD         C++ standard (default c++17)
#   RRM_NVCC_EXTRA_FLAGS extra flags appended to every nvcc command (word-split)
# Exit codes: 0 all files compiled and no function holds an FMA; 1 at least
#   one file failed either check; 2 nvcc missing, or no
#   *_cuda.cu file found (which is treated as a failure: the check would prove nothing).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TOOL_NAME=check_cuda_compile
# shellcheck source=tools/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NVCC="${NVCC:-nvcc}"
if ! command -v "$NVCC" >/dev/null 2>&1; then
  log "ERROR: nvcc not found (NVCC=$NVCC); install the CUDA toolkit or set NVCC" >&2
  exit 2
fi

mapfile -t FILES < <(find csrc -type f -name '*_cuda.cu' 2>/dev/null | LC_ALL=C sort)
if [ "${#FILES[@]}" -eq 0 ]; then
  log "ERROR: no csrc/**/*_cuda.cu files found under $ROOT/csrc: nothing to check" >&2
  exit 2
fi

JOBS="${RRM_NVCC_JOBS:-$(nproc 2>/dev/null || echo 2)}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/rrm-cuda-compile.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

# setup.py's nvcc flags, plus warnings as errors: nvcc's own diagnostics (-Werror all-warnings)
# and the host compiler's (-Xcompiler -Wall,-Werror). C++17 by default, the oldest standard the
# sources must support; the extension build itself gets -std=c++20 from torch's cpp_extension
# (torch 2.14 headers need it), so RRM_NVCC_STD=c++20 checks that too.
# shellcheck disable=SC2054  # -Wall,-Werror is one nvcc argument
NVCC_FLAGS=(
  -c -O3 "-std=${RRM_NVCC_STD:-c++17}" --expt-relaxed-constexpr --fmad=false
  -I csrc -DRRM_WITH_CUDA=1
  -gencode arch=compute_80,code=sm_80
  -gencode arch=compute_90,code=sm_90
  -Werror all-warnings
  -Xcompiler -Wall,-Werror
)
if [ -n "${RRM_NVCC_EXTRA_FLAGS:-}" ]; then
  # shellcheck disable=SC2206  # word splitting is intended
  NVCC_FLAGS+=(${RRM_NVCC_EXTRA_FLAGS})
fi

# The same flags without object output and architectures: PTX for one virtual architecture.
PTX_FLAGS=()
skip=0
for flag in "${NVCC_FLAGS[@]}"; do
  if [ "$skip" -eq 1 ]; then skip=0; continue; fi
  case "$flag" in
    -c) ;;
    -gencode) skip=1 ;;
    *) PTX_FLAGS+=("$flag") ;;
  esac
done
PTX_FLAGS+=(-ptx -arch=compute_80)

log "repo: $ROOT"
log "nvcc: $(command -v "$NVCC") ($("$NVCC" --version | grep -o 'release [0-9.]*' || echo 'version unknown'))"
log "flags: ${NVCC_FLAGS[*]}"
log "${#FILES[@]} file(s), $JOBS parallel job(s)"

# The PTX functions (entries and device functions) of one file that hold an FMA, one per line as
# "<count> <demangled name>".
ptx_fma_functions() {
  local ptx="$1"
  awk '/^(\.visible |\.weak )?\.(entry|func)/ { name = $0; gsub(/\(\.param[^)]*\)/, "", name); sub(/\(.*$/, "", name); sub(/.* /, "", name) }
       /^[[:space:]]*fma\./ { count[name]++ }
       END { for (n in count) print count[n], n }' "$ptx" |
    while read -r count name; do
      printf '%s %s\n' "$count" "$(printf '%s' "$name" | c++filt)"
    done
}

# One file: compile, then print its whole report at once so parallel jobs do not interleave.
# Status lines go to stdout; the exit status tells xargs whether it failed.
compile_one() {
  local src="$1" obj log_file start end status=0 secs
  obj="$TMP/obj/${src//\//__}.o"
  log_file="$TMP/log/${src//\//__}.log"
  start="$(date +%s%N)"
  "$NVCC" "${NVCC_FLAGS[@]}" "$src" -o "$obj" >"$log_file" 2>&1 || status=$?
  if [ "$status" -eq 0 ]; then
    "$NVCC" "${PTX_FLAGS[@]}" "$src" -o "$obj.ptx" >>"$log_file" 2>&1 || status=$?
  fi
  if [ "$status" -eq 0 ]; then
    local fused
    fused="$(ptx_fma_functions "$obj.ptx")"
    if [ -n "$fused" ]; then
      printf 'fused multiply-adds in the PTX (count, function); is --fmad=false missing, or a libm function called?\n%s\n' "$fused" >>"$log_file"
      status=3
    fi
  fi
  end="$(date +%s%N)"
  secs="$(awk -v d="$((end - start))" 'BEGIN { printf "%.1f", d / 1e9 }')"
  if [ "$status" -eq 0 ]; then
    if [ -s "$log_file" ]; then
      printf '  ok    %6ss  %s\n%s\n' "$secs" "$src" "$(sed 's/^/        | /' "$log_file")"
    else
      printf '  ok    %6ss  %s\n' "$secs" "$src"
    fi
    return 0
  fi
  printf '  FAIL  %6ss  %s (exit %s)\n%s\n' "$secs" "$src" "$status" "$(sed 's/^/        | /' "$log_file")"
  printf '%s\n' "$src" >>"$TMP/failed.list"
  return 1
}

mkdir -p "$TMP/obj" "$TMP/log"
: >"$TMP/failed.list"
export NVCC TMP

NVCC_FLAGS_STR="$(printf '%q ' "${NVCC_FLAGS[@]}")"
PTX_FLAGS_STR="$(printf '%q ' "${PTX_FLAGS[@]}")"
export NVCC_FLAGS_STR PTX_FLAGS_STR
export -f compile_one ptx_fma_functions

T0="$(date +%s%N)"
status=0
# shellcheck disable=SC2016  # expanded by the inner bash
printf '%s\0' "${FILES[@]}" |
  xargs -0 -n 1 -P "$JOBS" bash -c 'eval "NVCC_FLAGS=($NVCC_FLAGS_STR)"; eval "PTX_FLAGS=($PTX_FLAGS_STR)"; compile_one "$1"' _ || status=$?
T1="$(date +%s%N)"
TOTAL="$(awk -v d="$((T1 - T0))" 'BEGIN { printf "%.1f", d / 1e9 }')"

mapfile -t FAILED < <(LC_ALL=C sort "$TMP/failed.list")
if [ "${#FAILED[@]}" -gt 0 ] || [ "$status" -ne 0 ]; then
  log "FAILED: ${#FAILED[@]} of ${#FILES[@]} file(s) did not compile or hold an FMA (total ${TOTAL}s):" >&2
  for f in "${FAILED[@]}"; do log "  $f" >&2; done
  [ "${#FAILED[@]}" -gt 0 ] || log "  (xargs exited with status $status)" >&2
  exit 1
fi
log "OK: ${#FILES[@]} file(s) compiled for sm_80 and sm_90 with warnings as errors, no FMA in their PTX (total ${TOTAL}s)"
