"""Build the rrm_ops._C extension against the torch that is already installed.

CPU kernels are always built. CUDA kernels are added when torch is a CUDA build and nvcc
is found, or when RRM_FORCE_CUDA=1; RRM_CPU_ONLY=1 skips them. TORCH_CUDA_ARCH_LIST is
honoured by torch.utils.cpp_extension itself.
"""

import glob
import os
import platform
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("csrc")


def _log(message: str) -> None:
    print(f"[rrm setup] {message}", file=sys.stderr)


def _cuda_root() -> str | None:
    """Return the CUDA toolkit root that has the runtime headers, or None.

    The nvcc on PATH may be a wrapper script living outside the toolkit, so the parent of
    its folder (torch's guess) is checked for include/cuda_runtime_api.h before use.
    """
    candidates = []
    if os.environ.get("CUDA_HOME"):
        candidates.append(("CUDA_HOME", os.environ["CUDA_HOME"]))
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(("nvcc on PATH", os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))))
        candidates.append(("nvcc wrapper", os.path.dirname(os.path.dirname(nvcc))))
    candidates.append(("standard location", "/usr/local/cuda"))
    for source, root in candidates:
        if os.path.isfile(os.path.join(root, "include", "cuda_runtime_api.h")):
            _log(f"CUDA toolkit root: {root} (from {source})")
            return root
    return None


# The CPU features x86-64-v3 adds to x86-64-v2, as /proc/cpuinfo names them (abm: LZCNT).
_X86_64_V3_FEATURES = frozenset({"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"})
_CPU_ISAS = ("x86-64-v2", "x86-64-v3", "x86-64-v4", "native")


def _build_machine_has_x86_64_v3() -> bool:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return _X86_64_V3_FEATURES <= set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return False


def _cpu_isa() -> str | None:
    """The -march of the CPU kernels on x86-64 (None elsewhere): RRM_CPU_ISA if set, else
    x86-64-v3 (AVX2) when the build machine has it, else x86-64-v2 (SSE4.2)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    requested = os.environ.get("RRM_CPU_ISA")
    if requested:
        if requested not in _CPU_ISAS:
            raise RuntimeError(f"RRM_CPU_ISA must be one of {', '.join(_CPU_ISAS)}, got {requested!r}")
        return requested
    return "x86-64-v3" if _build_machine_has_x86_64_v3() else "x86-64-v2"


def _want_cuda(torch_module) -> bool:
    if os.environ.get("RRM_CPU_ONLY") == "1":
        _log("RRM_CPU_ONLY=1: building CPU kernels only")
        return False
    if os.environ.get("RRM_FORCE_CUDA") == "1":
        return True
    return torch_module.version.cuda is not None and shutil.which("nvcc") is not None


def _extensions():
    import torch
    from torch.utils import cpp_extension

    cpu_sources = sorted(glob.glob(os.path.join(CSRC, "**", "*.cpp"), recursive=True))
    cpu_sources = [s for s in cpu_sources if not s.endswith("_cuda_glue.cpp")]
    # -ffp-contract=off: no fused multiply-adds, so CPU results do not depend on the compiler's
    # choice. -fno-trapping-math only lets it turn float selects into vector blends (no value
    # changes). -fno-wrapv undoes the -fwrapv of Python's CFLAGS, which made the lattice loops
    # three times slower (their index arithmetic could no longer be simplified); nothing here
    # relies on signed overflow wrapping. Hidden visibility keeps calls inside the module.
    cxx_flags = ["-O3", "-fno-wrapv", "-fno-fast-math", "-ffp-contract=off", "-fno-trapping-math",
                 "-fvisibility=hidden"]
    # x86-64-v2 (SSE4.2) gives the lattice embedding one instruction per floor/ceil instead of
    # about ten; x86-64-v3 (AVX2) halves the vector instructions of the channel loops. Neither
    # changes a float result: the code fixes every operation's order and contracts nothing.
    isa = _cpu_isa()
    if isa is not None:
        _log(f"CPU kernels compiled for -march={isa}")
        cxx_flags.append(f"-march={isa}")
    link_flags = []
    # at::parallel_for is a header template: unless the extension itself is compiled with
    # OpenMP, its `#pragma omp parallel` compiles away and every CPU kernel runs on one thread.
    # The libgomp already loaded by torch then serves the extension too.
    if torch._C.has_openmp:
        cxx_flags.append("-fopenmp")
        link_flags.append("-fopenmp")
    include_dirs = [os.path.join(ROOT, CSRC)]

    if not _want_cuda(torch):
        return [
            cpp_extension.CppExtension(
                "rrm_ops._C", cpu_sources, include_dirs=include_dirs,
                extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_flags,
            )
        ]

    root = _cuda_root()
    if root is None:
        raise RuntimeError(
            "CUDA build requested but no CUDA toolkit with include/cuda_runtime_api.h was found; "
            "set CUDA_HOME to the toolkit root or RRM_CPU_ONLY=1"
        )
    os.environ["CUDA_HOME"] = root
    cpp_extension.CUDA_HOME = root
    cuda_sources = sorted(glob.glob(os.path.join(CSRC, "**", "*_cuda.cu"), recursive=True))
    glue_sources = sorted(glob.glob(os.path.join(CSRC, "**", "*_cuda_glue.cpp"), recursive=True))
    _log(f"building CUDA kernels: {len(cuda_sources)} .cu files")
    return [
        cpp_extension.CUDAExtension(
            "rrm_ops._C",
            cpu_sources + glue_sources + cuda_sources,
            include_dirs=include_dirs,
            define_macros=[("RRM_WITH_CUDA", "1")],
            extra_compile_args={
                "cxx": cxx_flags,
                "nvcc": ["-O3", "--expt-relaxed-constexpr"],
            },
            extra_link_args=link_flags,
        )
    ]


def _build_ext():
    from torch.utils.cpp_extension import BuildExtension

    return BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)


setup(
    packages=find_packages(include=["rrm_ops", "rrm_ops.*", "rrm", "rrm.*"]),
    ext_modules=_extensions(),
    cmdclass={"build_ext": _build_ext()},
)
