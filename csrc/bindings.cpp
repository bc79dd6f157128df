// Operator schemas of the rrm_ops library. Kernels are registered per device beside their
// launchers (lattice/lattice_cpu.cpp, lattice/lattice_cuda_glue.cpp, ...); fake kernels and
// autograd are registered from Python (rrm_ops/_meta.py, rrm_ops/*.py).
#include <torch/extension.h>
#include <torch/library.h>

TORCH_LIBRARY(rrm_ops, m) {
  m.def(
      "lattice_build(Tensor features) -> (Tensor offsets, Tensor weights, Tensor neighbours, Tensor splat_ptr, "
      "Tensor splat_entries)");
  m.def(
      "lattice_filter(Tensor offsets, Tensor weights, Tensor neighbours, Tensor splat_ptr, Tensor splat_entries, "
      "Tensor values, bool reverse=False) -> Tensor");
}

// An importable module so `import rrm_ops._C` loads the library and runs the registrations.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.doc() = "rrm_ops kernels; use torch.ops.rrm_ops.*"; }
