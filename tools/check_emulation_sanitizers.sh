#!/usr/bin/env bash
# Runs the tests of the emulated CUDA kernels under AddressSanitizer and UndefinedBehaviorSanitizer:
# an out-of-bounds index, a use after free or an overflowing integer in a launcher, its glue or
# a shared kernel body fails this check (docs/testing.md).
#
# Steps:
#   1. copy the repository's source files (tracked and untracked, not ignored) to a temporary
#      folder, with the already built rrm_ops/_C extension (the CPU kernels the tests compare
#      with; build it first: tools/install.sh);
#   2. build rrm_ops._emulated there with -fsanitize=address,undefined (RRM_EMULATION=only,
#      RRM_EMULATION_FLAGS), every report fatal;
#   3. run the emulated tests from that folder with libasan preloaded, and libstdc++ with it so
#      that ASan finds the C++ exception functions it intercepts (Python itself is neither
#      instrumented nor linked to libstdc++); any sanitizer report aborts the run.
#
# Usage: tools/check_emulation_sanitizers.sh [pytest arguments]   (from any directory)
#   Without arguments it runs tests/test_cuda_emulation.py and tests/test_cuda_equivalence.py.
# Environment (all optional):
#   PYTHON      interpreter with torch and the test dependencies (default python)
#   MAX_JOBS    parallel compile jobs (default: number of cores)
#   RRM_SANITIZER_TMP  parent folder of the temporary copy (default $TMPDIR or /tmp)
#   RRM_SANITIZER_WORKDIR  folder to copy into and keep instead of a temporary one: a rerun
#                      there rebuilds only the files that changed
# Exit codes: 0 no report and all tests passed; 1 a build failure, a test failure or a sanitizer
#   report; 2 environment problem (no built rrm_ops/_C, no libasan).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
TOOL_NAME=check_emulation_sanitizers
# shellcheck source=tools/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mapfile -t BUILT < <(find "$ROOT/rrm_ops" -maxdepth 1 -name '_C.*.so' 2>/dev/null)
[ "${#BUILT[@]}" -eq 1 ] || die 2 "expected one built rrm_ops/_C extension in $ROOT/rrm_ops, found ${#BUILT[@]} (run tools/install.sh)"
LIBASAN="$(gcc -print-file-name=libasan.so)"
[ -e "$LIBASAN" ] || die 2 "gcc has no libasan.so ($LIBASAN)"
LIBSTDCXX="$(g++ -print-file-name=libstdc++.so.6)"
[ -e "$LIBSTDCXX" ] || die 2 "g++ has no libstdc++.so.6 ($LIBSTDCXX)"

if [ -n "${RRM_SANITIZER_WORKDIR:-}" ]; then
  WORK="$RRM_SANITIZER_WORKDIR"
  mkdir -p "$WORK"
else
  WORK="$(mktemp -d "${RRM_SANITIZER_TMP:-${TMPDIR:-/tmp}}/rrm-sanitizers.XXXXXX")"
  trap 'rm -rf "$WORK"' EXIT
fi
SRC="$WORK/src"
mkdir -p "$SRC"
git -C "$ROOT" ls-files -z --cached --others --exclude-standard |
  (cd "$ROOT" && while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done) |
  (cd "$ROOT" && tar --null -T - -cf -) | tar -xf - -C "$SRC"
cp "${BUILT[0]}" "$SRC/rrm_ops/"
log "sources copied to $SRC"

# -O1 and frame pointers for usable reports; -fno-sanitize-recover makes every UBSan report
# fatal, as ASan's are.
FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1"
T0=$SECONDS
log "building rrm_ops._emulated with $FLAGS"
if ! (cd "$SRC" && RRM_EMULATION=only RRM_EMULATION_FLAGS="$FLAGS" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
  "$PYTHON" setup.py build_ext --inplace >"$WORK/build.log" 2>&1); then
  tail -n 60 "$WORK/build.log" >&2
  die 1 "the sanitized build failed (log above)"
fi
log "built in $((SECONDS - T0)) s"

if [ "$#" -eq 0 ]; then
  set -- tests/test_cuda_emulation.py tests/test_cuda_equivalence.py
fi
T0=$SECONDS
status=0
# Reports go to files (REPORTS.<pid>): pytest captures the tests' stderr, and an aborting
# sanitizer would take its report down with it. Leaks are not checked: Python and torch keep
# memory until exit by design.
REPORTS="$WORK/sanitizer-report"
rm -f "$REPORTS".*
(cd "$SRC" && PYTHONPATH="$SRC" LD_PRELOAD="$LIBASAN:$LIBSTDCXX" \
  ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:print_summary=1:log_path=$REPORTS" \
  UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:log_path=$REPORTS" \
  "$PYTHON" -m pytest -q -p no:cacheprovider "$@") 2>&1 | tee "$WORK/tests.log" || status=$?
log "tests ran in $((SECONDS - T0)) s"
if compgen -G "$REPORTS.*" >/dev/null; then
  head -n 60 "$REPORTS".* >&2
  die 1 "a sanitizer reported an error (above; in full: $REPORTS.*)"
fi
[ "$status" -eq 0 ] || die 1 "the tests failed under the sanitizers (pytest exit $status)"
log "OK: the emulated CUDA tests pass under AddressSanitizer and UndefinedBehaviorSanitizer"
