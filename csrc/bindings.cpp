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
  m.def(
      "prune_reliable_labels(Tensor cams, Tensor q_low, Tensor q_high, float cam_alpha, float fg_quantile, "
      "float cam_floor, float bg_sure, float crf_sure, int ignore_index) -> (Tensor labels, Tensor sure)");
}

// An importable module so `import rrm_ops._C` loads the library and runs the registrations.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.doc() = "rrm_ops kernels; use torch.ops.rrm_ops.*"; }
