"""Build the rrm_ops._C extension against the torch that is already installed.

CPU kernels are always built. CUDA kernels are added when torch is a CUDA build and nvcc
is found, or when RRM_FORCE_CUDA=1; RRM_CPU_ONLY=1 skips them. TORCH_CUDA_ARCH_LIST is
honoured by torch.utils.cpp_extension itself.

RRM_EMULATION=1 (set by tools/install.sh --test) also builds rrm_ops._emulated, the CUDA
kernels compiled for the host against the CUDA runtime emulation of csrc/emulation, which the
tests compare with the CPU kernels; RRM_EMULATION=only builds it alone, and RRM_EMULATION_FLAGS
adds compiler and linker flags to it (tools/check_emulation_sanitizers.sh).
"""

import glob
import os
import platform
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("csrc")
EMULATION = os.path.join(CSRC, "emulation")


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

    cpu_sources = [s for s in _sources("*.cpp") if not s.endswith("_cuda_glue.cpp")]
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

    emulation = os.environ.get("RRM_EMULATION", "0")
    if emulation not in ("0", "1", "only"):
        raise RuntimeError(f"RRM_EMULATION must be 0, 1 or only, got {emulation!r}")
    emulated = [] if emulation == "0" else [_emulated_extension(cpp_extension, cxx_flags, link_flags)]
    if emulation == "only":
        return emulated
    if not _want_cuda(torch):
        return [
            cpp_extension.CppExtension(
                "rrm_ops._C", cpu_sources, include_dirs=include_dirs,
                extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_flags,
            )
        ] + emulated

    root = _cuda_root()
    if root is None:
        raise RuntimeError(
            "CUDA build requested but no CUDA toolkit with include/cuda_runtime_api.h was found; "
            "set CUDA_HOME to the toolkit root or RRM_CPU_ONLY=1"
        )
    os.environ["CUDA_HOME"] = root
    cpp_extension.CUDA_HOME = root
    cuda_sources = _sources("*_cuda.cu")
    glue_sources = _sources("*_cuda_glue.cpp")
    _log(f"building CUDA kernels: {len(cuda_sources)} .cu files")
    return [
        cpp_extension.CUDAExtension(
            "rrm_ops._C",
            cpu_sources + glue_sources + cuda_sources,
            include_dirs=include_dirs,
            define_macros=[("RRM_WITH_CUDA", "1")],
            extra_compile_args={
                "cxx": cxx_flags,
                # --fmad=false: no fused multiply-adds (nvcc's default fuses them), so the CUDA
                # kernels do the float operations of the CPU kernels (-ffp-contract=off), bit for bit.
                "nvcc": ["-O3", "--expt-relaxed-constexpr", "--fmad=false"],
            },
            extra_link_args=link_flags,
        )
    ] + emulated


def _sources(pattern: str) -> list[str]:
    """The kernel sources matching pattern under csrc, without the emulation's own."""
    found = glob.glob(os.path.join(CSRC, "**", pattern), recursive=True)
    return sorted(s for s in found if os.path.commonpath([s, EMULATION]) != EMULATION)


def _emulated_extension(cpp_extension, cxx_flags: list[str], link_flags: list[str]):
    """rrm_ops._emulated: the sources of the CUDA build, with csrc/emulation's host emulation of
    the CUDA runtime, CUB and c10::cuda in place of the real ones (its include folder comes first)
    and each .cu compiled as C++ through a generated one-line source that includes it. Its
    bindings define the ops in rrm_ops_emu instead of rrm_ops."""
    wrapper_dir = os.path.join("build", "emulated_cuda_sources")
    os.makedirs(wrapper_dir, exist_ok=True)
    wrappers = []
    for source in _sources("*_cuda.cu"):
        wrapper = os.path.join(wrapper_dir, os.path.basename(source)[: -len(".cu")] + ".cpp")
        text = f'#include "{os.path.relpath(source, CSRC)}"\n'
        if not os.path.exists(wrapper) or open(wrapper).read() != text:
            with open(wrapper, "w") as out:
                out.write(text)
        wrappers.append(wrapper)
    sources = [s for s in _sources("*.cpp") if s != os.path.join(CSRC, "bindings.cpp")]
    sources += sorted(glob.glob(os.path.join(EMULATION, "*.cpp"))) + wrappers
    # The CPU kernels' flags: -ffp-contract=off keeps every float operation of the CUDA kernels
    # as written, as nvcc's --fmad=false does.
    extra = os.environ.get("RRM_EMULATION_FLAGS", "").split()
    _log(f"building rrm_ops._emulated (emulated CUDA kernels){' with ' + ' '.join(extra) if extra else ''}")
    return cpp_extension.CppExtension(
        "rrm_ops._emulated",
        sources,
        include_dirs=[os.path.join(ROOT, EMULATION, "include"), os.path.join(ROOT, CSRC)],
        define_macros=[("RRM_EMULATED_CUDA", "1"), ("RRM_WITH_CUDA", "1")],
        extra_compile_args={"cxx": cxx_flags + extra},
        extra_link_args=link_flags + extra,
    )


def _build_ext():
    from torch.utils.cpp_extension import BuildExtension

    return BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)


setup(
    packages=find_packages(include=["rrm_ops", "rrm_ops.*", "rrm", "rrm.*"]),
    ext_modules=_extensions(),
    cmdclass={"build_ext": _build_ext()},
)
