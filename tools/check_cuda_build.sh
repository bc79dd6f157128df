#!/usr/bin/env bash
# Build rrm_ops._C with its CUDA kernels against torch 2.14.1+cu130 in a throwaway virtualenv,
# then check that every torch.ops.rrm_ops operator has a CPU and a CUDA kernel registered.
# No GPU is needed: the extension is built for sm_80 and sm_90 and only imported.
#
# Steps (each one timed):
#   1. create a virtualenv (a temporary folder, or $RRM_CUDA_VENV);
#   2. install torch==2.14.1 (the CUDA 13.0 build that lies on local disk) plus ninja and numpy.
#      The cheap way ("lean", the default): torch with --no-deps, then only the packages that
#      `import torch` really loads (its Python deps and the NVIDIA libraries that
#      libtorch_cuda.so links to), pinned to the versions torch 2.14.1 asks for. Left out:
#      triton, cuda-bindings, cuSOLVER, CUPTI, NVTX (lazily loaded or unused here), which saves
#      1.2 GB (4.1 GB instead of 5.3 GB), 20-35% of the install's CPU time and ~55 MB of PyPI
#      downloads (all pins below lie on local disk). `import torch` is then verified; if it
#      fails, the script falls back to the plain `pip install torch==2.14.1` with all deps
#      ("full"; forced with RRM_TORCH_INSTALL=full);
#   3. copy the repository's source files (tracked and untracked, not ignored) to a temporary
#      folder, so the build never writes build/ or *.egg-info into the work tree;
#   4. RRM_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="8.0;9.0" pip install --no-build-isolation <copy>,
#      with a constraint that pins torch==2.14.1 (the build must not pull another torch);
#   5. from a folder outside the repository (python -I), import rrm_ops, check it was loaded
#      from the venv, that torch is still 2.14.1 with CUDA, and print a table of the rrm_ops::
#      operators with their CPU / CUDA / Meta kernels; CPU and CUDA are required for every op.
#
# Usage: tools/check_cuda_build.sh              (from any directory)
# Environment (all optional):
#   PYTHON              interpreter for the venv (default python3; must be 3.11, the Python of
#                       the torch wheel on local disk - any other would download GBs)
#   RRM_CUDA_TMP        folder for the temporary venv and build (default: /dev/shm when it is a
#                       tmpfs with >= 8 GiB free and >= 14 GiB of memory available, else
#                       $TMPDIR or /tmp)
#   RRM_CUDA_VENV       venv path to use instead of a temporary one; it is kept afterwards, and
#                       reused without reinstalling when it already has torch 2.14.1+CUDA
#   RRM_KEEP_VENV=1     keep the temporary venv (its path is printed)
#   RRM_TORCH_INSTALL   lean (default) or full
#   RRM_BUILD_VERBOSE=1 stream the whole pip/compiler output (default: into a log that is
#                       printed, filtered and tailed, only when the build fails)
#   MAX_JOBS            parallel compile jobs for the build (default: number of cores)
# Exit codes: 0 ok; 1 build failed or an op lacks a CPU/CUDA kernel (or no op found);
#   2 environment problem (wrong Python, no nvcc, torch install failed).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TORCH_VERSION="2.14.1"
PYTHON="${PYTHON:-python3}"
INSTALL_MODE="${RRM_TORCH_INSTALL:-lean}"

TOOL_NAME=check_cuda_build
# shellcheck source=tools/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
now_ns() { date +%s%N; }
secs_since() { awk -v d="$(($(now_ns) - $1))" 'BEGIN { printf "%.1f", d / 1e9 }'; }

# CPU time (user + sys, seconds) of this shell's finished children: with the wall time it shows
# how much a step was slowed by other load on the machine.
CLK_TCK="$(getconf CLK_TCK 2>/dev/null || echo 100)"
cpu_ticks() { awk '{ print $16 + $17 }' "/proc/$$/stat" 2>/dev/null || echo 0; }
cpu_since() { awk -v d="$(($(cpu_ticks) - $1))" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", d / hz }'; }

STEP_NAMES=()
STEP_TIMES=()
STEP_CPU=()
STEP_T0=0
STEP_C0=0
step_begin() {
  STEP_T0="$(now_ns)"
  STEP_C0="$(cpu_ticks)"
  log "== $1"
}
step_end() {
  local t c
  t="$(secs_since "$STEP_T0")"
  c="$(cpu_since "$STEP_C0")"
  STEP_NAMES+=("$1")
  STEP_TIMES+=("$t")
  STEP_CPU+=("$c")
  log "   done: $1 (wall ${t}s, cpu ${c}s)"
}
print_times() {
  local i
  log "step times (wall / cpu = user+sys of all processes, seconds):"
  for i in "${!STEP_NAMES[@]}"; do
    printf '    %8s %8s  %s\n' "${STEP_TIMES[$i]}" "${STEP_CPU[$i]}" "${STEP_NAMES[$i]}"
  done
  printf '    %8s %8s  %s\n' "$(secs_since "$SCRIPT_T0")" "$(cpu_since "$SCRIPT_C0")" "total"
}
SCRIPT_T0="$(now_ns)"
SCRIPT_C0="$(cpu_ticks)"

# ---------------------------------------------------------------------------------------------
# Preflight
command -v "$PYTHON" >/dev/null 2>&1 || die 2 "python not found (PYTHON=$PYTHON)"
PYVER="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[ "$PYVER" = "3.11" ] || die 2 "$PYTHON is Python $PYVER; torch $TORCH_VERSION+cu130 lies on local disk for Python 3.11 only (set PYTHON to a 3.11 interpreter)"
command -v nvcc >/dev/null 2>&1 || die 2 "nvcc not found on PATH"
# docs/design.md#build: glue code includes c10/cuda/... headers. ATen/cuda/CUDAContext.h (and its
# CUDAContextLight.h) include cusparse.h / cublas_v2.h / cusolverDn.h, which the CUDA toolkit
# on these machines lacks, so the build would fail minutes later with "cusparse.h: No such file".
mapfile -t BAD_INCLUDES < <(grep -rnE '#[[:space:]]*include[[:space:]]*[<"]ATen/cuda/CUDAContext(Light)?\.h[>"]' csrc 2>/dev/null || true)
if [ "${#BAD_INCLUDES[@]}" -gt 0 ]; then
  printf '  %s\n' "${BAD_INCLUDES[@]}" >&2
  die 1 "include c10/cuda/CUDAStream.h / c10/cuda/CUDAGuard.h instead of ATen/cuda/CUDAContext.h (docs/design.md#build): it needs cuSPARSE/cuBLAS/cuSOLVER headers that the toolkit here lacks"
fi

log "repo: $ROOT"
log "python: $(command -v "$PYTHON") ($PYVER); nvcc: $(command -v nvcc) ($(nvcc --version | grep -o 'release [0-9.]*' || echo '?'))"

# Where the temporary venv and build go. The venv is ~4 GB of files written once and deleted at
# the end; on this machine kind / is ext4 mounted with `discard`, where deleting them took up to
# 50 s, while on the RAM-backed /dev/shm it takes ~2 s (and the install does no disk I/O). So
# /dev/shm is used when it is a tmpfs with room to spare, else $TMPDIR or /tmp.
pick_tmp_parent() {
  if [ -n "${RRM_CUDA_TMP:-}" ]; then
    printf '%s\n' "$RRM_CUDA_TMP"
    return
  fi
  local shm_free_kb mem_avail_kb
  if [ -d /dev/shm ] && [ -w /dev/shm ] && [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = "tmpfs" ]; then
    shm_free_kb="$(df -Pk /dev/shm | awk 'NR == 2 { print $4 }')"
    mem_avail_kb="$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)"
    if [ "${shm_free_kb:-0}" -ge $((8 * 1024 * 1024)) ] && [ "${mem_avail_kb:-0}" -ge $((14 * 1024 * 1024)) ]; then
      printf '/dev/shm\n'
      return
    fi
  fi
  printf '%s\n' "${TMPDIR:-/tmp}"
}
TMP_PARENT="$(pick_tmp_parent)"
mkdir -p "$TMP_PARENT"
WORK="$(mktemp -d "$TMP_PARENT/rrm-cuda-build.XXXXXX")"
TMP_VENV=""
if [ -n "${RRM_CUDA_VENV:-}" ]; then
  VENV="$RRM_CUDA_VENV"
else
  TMP_VENV="$(mktemp -d "$TMP_PARENT/rrm-cuda-venv.XXXXXX")"
  VENV="$TMP_VENV"
fi
cleanup() {
  local status=$?
  rm -rf "$WORK"
  if [ -n "$TMP_VENV" ]; then
    if [ "${RRM_KEEP_VENV:-0}" = "1" ]; then
      log "venv kept at $TMP_VENV (RRM_KEEP_VENV=1; reuse it with RRM_CUDA_VENV=$TMP_VENV)"
    else
      local t0
      t0="$(now_ns)"
      rm -rf "$TMP_VENV"
      log "removed the temporary venv (${TMP_VENV}) in $(secs_since "$t0")s"
    fi
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
VPY="$VENV/bin/python"
# pip prints one harmless warning per package for the extra local indexes that lack it.
PIP_NOISE='is ignored: it is neither a file nor a directory'
vpip() { "$VPY" -m pip "$@" 2> >(grep -v "$PIP_NOISE" >&2); }

# torch_ok: 0 when the venv's torch imports, is $TORCH_VERSION and is a CUDA build.
torch_ok() {
  (cd "$WORK" && "$VPY" -I -c "
import sys, torch
ok = torch.__version__.split('+')[0] == '$TORCH_VERSION' and torch.version.cuda is not None
print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'from', torch.__file__)
sys.exit(0 if ok else 1)
") 2>&1
}

# ---------------------------------------------------------------------------------------------
# 1-2. venv and torch
REUSED=0
if [ -x "$VPY" ] && [ -n "${RRM_CUDA_VENV:-}" ] && torch_ok >/dev/null 2>&1; then
  REUSED=1
  log "reusing venv $VENV: $(torch_ok | tail -n 1)"
else
  step_begin "create venv at $VENV"
  "$PYTHON" -m venv "$VENV"
  step_end "create venv"

  step_begin "install torch==$TORCH_VERSION ($INSTALL_MODE), ninja, numpy"
  # The pins below are exactly what torch 2.14.1's metadata asks for (through
  # cuda-toolkit[...]==13.0.3 and its own nvidia-*-cu13 pins); nvjitlink is pinned to the
  # release on local disk (torch allows >=13.0.88,<14).
  LEAN_DEPS=(
    filelock "typing-extensions>=4.10.0" "sympy>=1.13.3" mpmath "networkx>=2.5.1" jinja2 markupsafe
    "fsspec>=0.8.5" "setuptools>=77.0.3" wheel
    nvidia-cuda-runtime==13.0.96 nvidia-cublas==13.1.1.3 nvidia-cuda-nvrtc==13.0.88
    nvidia-cufft==12.0.0.61 nvidia-cufile==1.15.1.6 nvidia-curand==10.4.0.35
    nvidia-cusparse==12.6.3.3 nvidia-nvjitlink==13.4.92
    nvidia-cudnn-cu13==9.24.0.43 nvidia-cusparselt-cu13==0.8.1 nvidia-nccl-cu13==2.30.7
    nvidia-nvshmem-cu13==3.4.5
    ninja numpy
  )
  installed=0
  if [ "$INSTALL_MODE" = "lean" ]; then
    if vpip install --quiet --no-compile --no-deps --no-warn-conflicts "torch==$TORCH_VERSION" "${LEAN_DEPS[@]}"; then
      if out="$(torch_ok)"; then
        installed=1
        log "   $out"
      else
        log "   lean install does not import; falling back to the full install. Error was:"
        printf '%s\n' "$out" | tail -n 5 | sed 's/^/      | /'
      fi
    else
      log "   lean install failed; falling back to the full install"
    fi
  elif [ "$INSTALL_MODE" != "full" ]; then
    die 2 "RRM_TORCH_INSTALL must be lean or full, not '$INSTALL_MODE'"
  fi
  if [ "$installed" = 0 ]; then
    INSTALL_MODE=full
    vpip install --quiet --no-compile "torch==$TORCH_VERSION" ninja numpy wheel "setuptools>=77.0.3" ||
      die 2 "pip install torch==$TORCH_VERSION failed"
    out="$(torch_ok)" || die 2 "torch $TORCH_VERSION does not import in the venv: $out"
    log "   $out"
  fi
  step_end "install torch $TORCH_VERSION ($INSTALL_MODE)"
fi

# ---------------------------------------------------------------------------------------------
# 3. source copy
step_begin "copy sources to $WORK/src"
SRC="$WORK/src"
mkdir -p "$SRC"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # Tracked and untracked files that .gitignore does not exclude (so no build/, *.so, ...).
  git -C "$ROOT" ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done |
    tar --null -T - -cf - | tar -xf - -C "$SRC"
else
  tar --exclude=.git --exclude=build --exclude=dist --exclude='*.egg-info' --exclude='*.so' \
    --exclude='*.o' --exclude=__pycache__ -cf - . | tar -xf - -C "$SRC"
fi
log "   $(find "$SRC" -type f | wc -l) files; $(find "$SRC/csrc" -name '*_cuda.cu' 2>/dev/null | wc -l) *_cuda.cu, $(find "$SRC/csrc" -name '*_cuda_glue.cpp' 2>/dev/null | wc -l) *_cuda_glue.cpp"
step_end "copy sources"

# ---------------------------------------------------------------------------------------------
# 4. build and install
step_begin "build + install rrm (RRM_FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST=8.0;9.0)"
printf 'torch==%s\n' "$TORCH_VERSION" >"$WORK/constraints.txt"
BUILD_LOG="$WORK/build.log"
build_status=0
(
  cd "$SRC"
  unset RRM_CPU_ONLY
  export RRM_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="8.0;9.0"
  export MAX_JOBS="${MAX_JOBS:-$(nproc 2>/dev/null || echo 2)}"
  # No debug info (Python's own CFLAGS add -g): nothing built here is debugged, and it saves
  # about a fifth of the compile time and most of the object size.
  export CFLAGS="${CFLAGS:-} -g0"
  "$VPY" -m pip install -v --no-build-isolation --no-compile -c "$WORK/constraints.txt" . 2>&1 |
    grep -v "$PIP_NOISE"
) >"$BUILD_LOG" 2>&1 || build_status=$?
if [ "${RRM_BUILD_VERBOSE:-0}" = "1" ]; then
  cat "$BUILD_LOG"
else
  # setup.py's own messages, one line per ninja step (compiler and source), pip's summary.
  grep -E '^\s*\[rrm setup\]|^\s*\[[0-9]+/[0-9]+\]|Successfully installed' "$BUILD_LOG" |
    sed -E 's/^\s*(\[[0-9]+\/[0-9]+\]) (\S+) .* -c (\S+) .*/\1 \2 \3/; s/^\s*//; s/^/      | /' || true
fi
if [ "$build_status" -ne 0 ]; then
  log "build FAILED (pip exit $build_status). Errors:" >&2
  grep -n -E 'error|Error|FAILED' "$BUILD_LOG" | grep -v -E 'Werror|-error-|error_|_error' | head -n 40 | sed 's/^/      | /' >&2 || true
  log "last 80 lines of the build log:" >&2
  tail -n 80 "$BUILD_LOG" | sed 's/^/      | /' >&2
  print_times
  exit 1
fi
step_end "build + install rrm"

# ---------------------------------------------------------------------------------------------
# 5. dispatcher check, from outside the repository
step_begin "check torch.ops.rrm_ops kernels"
check_status=0
(cd "$WORK" && RRM_VENV="$VENV" RRM_TORCH_VERSION="$TORCH_VERSION" "$VPY" -I - <<'PY') || check_status=$?
import os
import sys

import torch

venv = os.path.realpath(os.environ["RRM_VENV"])
problems = []


def inside_venv(path):
    return os.path.realpath(path).startswith(venv + os.sep)


print(f"  torch {torch.__version__} (CUDA {torch.version.cuda}) from {torch.__file__}")
if torch.__version__.split("+")[0] != os.environ["RRM_TORCH_VERSION"] or torch.version.cuda is None:
    problems.append(f"torch is {torch.__version__} (CUDA {torch.version.cuda}), expected "
                    f"{os.environ['RRM_TORCH_VERSION']} with CUDA: the build replaced it")

try:
    import rrm_ops  # noqa: E402
    from rrm_ops import _C  # noqa: E402
except Exception:  # report it as a problem, with the traceback
    import traceback

    traceback.print_exc(file=sys.stdout)
    print("  PROBLEM: import rrm_ops failed (traceback above)")
    sys.exit(1)

print(f"  rrm_ops from {rrm_ops.__file__}")
print(f"  rrm_ops._C from {_C.__file__}")
for module in (torch, rrm_ops, _C):
    if not inside_venv(module.__file__):
        problems.append(f"{module.__name__} was not loaded from the venv ({module.__file__})")

names = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("rrm_ops::"))
if not names:
    problems.append("no rrm_ops:: operator is registered")

keys = ["CPU", "CUDA", "Meta"]  # CPU and CUDA are required; Meta is shown for information
# Computed kernels: a composite registered once for every device (CompositeExplicitAutograd)
# serves CPU and CUDA too.
rows = [(name, [torch._C._dispatch_has_computed_kernel_for_dispatch_key(name, k) for k in keys]) for name in names]
width = max([len("operator")] + [len(n) for n in names])
print()
print("  " + "operator".ljust(width) + "".join(k.rjust(7) for k in keys))
print("  " + "-" * (width + 7 * len(keys)))
for name, has in rows:
    cells = [("yes" if h else ("NO" if i < 2 else "no")) for i, h in enumerate(has)]
    print("  " + name.ljust(width) + "".join(c.rjust(7) for c in cells))
    missing = [k for k, h in zip(keys[:2], has[:2]) if not h]
    if missing:
        problems.append(f"{name} has no {' / '.join(missing)} kernel")
print()
print(f"  {len(names)} operator(s); "
      f"{sum(all(h[:2]) for _, h in rows)} with both CPU and CUDA kernels")
if problems:
    for p in problems:
        print(f"  PROBLEM: {p}")
    sys.exit(1)
PY
step_end "check kernels"

# ---------------------------------------------------------------------------------------------
VENV_SIZE="$(du -sh "$VENV" 2>/dev/null | cut -f1 || echo '?')"
log "venv: $VENV ($VENV_SIZE$([ "$REUSED" = 1 ] && echo ', reused'))"
print_times
if [ "$check_status" -ne 0 ]; then
  log "FAILED: the kernel check found problems (PROBLEM lines above)" >&2
  exit 1
fi
log "OK: rrm_ops builds with CUDA against torch $TORCH_VERSION and every op has CPU and CUDA kernels"
