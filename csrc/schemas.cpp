// Operator schemas of the rrm_ops library (and of its emulated twin, see common/library.h).
// Kernels are registered per device beside their launchers (lattice/lattice_cpu.cpp,
// crf/crf_cpu.cpp, */*_cuda_glue.cpp, ...); fake kernels and autograd are registered from Python
// (rrm_ops/_meta.py, rrm_ops/*.py).
#include "common/library.h"

namespace rrm {

void define_ops(torch::Library& m) {
  m.def(
      "lattice_build(Tensor features, int point_block=1) -> (Tensor offsets, Tensor weights, Tensor neighbours, Tensor splat_ptr, "
      "Tensor splat_entries, Tensor splat_weights)");
  m.def(
      "lattice_filter(Tensor offsets, Tensor weights, Tensor neighbours, Tensor splat_ptr, Tensor splat_entries, "
      "Tensor splat_weights, Tensor values, bool reverse=False) -> Tensor");
  m.def(
      "prune_reliable_labels(Tensor cams, Tensor q_low, Tensor q_high, float cam_alpha, float fg_quantile, "
      "float cam_floor, float bg_sure, float crf_sure, int ignore_index, Tensor? q_labels=None) -> "
      "(Tensor labels, Tensor sure)");
  m.def(
      "dense_crf_meanfield(Tensor unary, Tensor? label_mask, Tensor gaussian_offsets, Tensor gaussian_weights, "
      "Tensor gaussian_neighbours, Tensor gaussian_splat_ptr, Tensor gaussian_splat_entries, "
      "Tensor gaussian_splat_weights, Tensor bilateral_offsets, Tensor bilateral_weights, Tensor bilateral_neighbours, "
      "Tensor bilateral_splat_ptr, Tensor bilateral_splat_entries, Tensor bilateral_splat_weights, "
      "float gaussian_compat, float bilateral_compat, int n_iter, Tensor? compat_matrices=None) -> Tensor");
  m.def(
      "dense_crf(Tensor? scores, Tensor image, *, Tensor? unary=None, int n_iter=10, float gaussian_sxy=3.0, "
      "float gaussian_compat=3.0, float bilateral_sxy=80.0, float bilateral_srgb=13.0, float bilateral_compat=10.0, "
      "Tensor? label_mask=None) -> Tensor");
  m.def(
      "reliable_region_labels(Tensor cams, Tensor cls_labels, Tensor images, *, float alpha_low=4.0, "
      "float alpha_high=32.0, float cam_alpha=32.0, float fg_quantile=0.6, float cam_floor=0.1, float bg_sure=0.8, "
      "float crf_sure=0.8, int ignore_index=255, bool return_q=True) -> (Tensor labels, "
      "Tensor sure, Tensor q)");
}

}  // namespace rrm
