// Operator schemas of the rrm_ops library (and of its emulated twin, see common/library.h).
// As torchvision's, they give no argument a default and mark none keyword-only: every default
// lives once, in the typed Python wrapper of rrm_ops/*.py, and a direct torch.ops call states
// every argument.
// Kernels are registered per device beside their launchers (lattice/lattice_cpu.cpp,
// crf/crf_cpu.cpp, */*_cuda_glue.cpp, ...); fake kernels and autograd are registered from Python
// (rrm_ops/_meta.py, rrm_ops/*.py).
#include "common/library.h"

namespace rrm {

void define_ops(torch::Library& m) {
  m.def(
      "lattice_build(Tensor features, int point_block) -> (Tensor offsets, Tensor weights, Tensor neighbours, Tensor splat_ptr, "
      "Tensor splat_entries, Tensor splat_weights)");
  // A lattice crosses the boundary as one Tensor[] of lattice_build's six outputs, in their order.
  m.def("lattice_filter(Tensor[] lattice, Tensor values, bool reverse) -> Tensor");
  m.def(
      "prune_reliable_labels(Tensor cams, Tensor q_low, Tensor q_high, float cam_alpha, float fg_quantile, "
      "float cam_floor, float bg_sure, float crf_sure, int ignore_index, Tensor? q_labels) -> "
      "(Tensor labels, Tensor sure)");
  m.def(
      "dense_crf_meanfield(Tensor unary, Tensor? label_mask, Tensor[] gaussian, Tensor[] bilateral, "
      "float gaussian_compat, float bilateral_compat, int n_iter, Tensor? compat_matrices) -> Tensor");
  m.def(
      "dense_crf(Tensor? scores, Tensor image, Tensor? unary, int n_iter, float gaussian_sxy, float gaussian_compat, "
      "float bilateral_sxy, float bilateral_srgb, float bilateral_compat, Tensor? label_mask) -> Tensor");
  m.def(
      "reliable_region_labels(Tensor cams, Tensor cls_labels, Tensor images, float alpha_low, float alpha_high, "
      "int n_iter, float gaussian_sxy, float gaussian_compat, float bilateral_sxy, float bilateral_srgb, "
      "float bilateral_compat, float cam_alpha, float fg_quantile, float cam_floor, float bg_sure, float crf_sure, "
      "int ignore_index, bool return_q) -> (Tensor labels, Tensor sure, Tensor q)");
}

}  // namespace rrm
