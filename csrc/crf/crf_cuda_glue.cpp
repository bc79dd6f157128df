// ATen -> raw pointer glue for the CUDA dense CRF launcher (compiled only in CUDA builds).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common/checks.h"
#include "common/library.h"
#include "crf/crf_cuda.h"
#include "crf/crf_ops.h"

namespace rrm {
namespace crf {
namespace {

at::Tensor dense_crf_meanfield_cuda(const at::Tensor& unary, const std::optional<at::Tensor>& label_mask,
                                    const at::Tensor& gaussian_offsets, const at::Tensor& gaussian_weights,
                                    const at::Tensor& gaussian_neighbours, const at::Tensor& gaussian_splat_ptr,
                                    const at::Tensor& gaussian_splat_entries, const at::Tensor& gaussian_splat_weights,
                                    const at::Tensor& bilateral_offsets, const at::Tensor& bilateral_weights,
                                    const at::Tensor& bilateral_neighbours, const at::Tensor& bilateral_splat_ptr,
                                    const at::Tensor& bilateral_splat_entries,
                                    const at::Tensor& bilateral_splat_weights, double gaussian_compat,
                                    double bilateral_compat, int64_t n_iter,
                                    const std::optional<at::Tensor>& compat_matrices) {
  check_one_device({{unary, "unary"},
                    {label_mask.value_or(at::Tensor()), "label_mask"},
                    {gaussian_offsets, "gaussian_offsets"},
                    {gaussian_weights, "gaussian_weights"},
                    {gaussian_neighbours, "gaussian_neighbours"},
                    {gaussian_splat_ptr, "gaussian_splat_ptr"},
                    {gaussian_splat_entries, "gaussian_splat_entries"},
                    {gaussian_splat_weights, "gaussian_splat_weights"},
                    {bilateral_offsets, "bilateral_offsets"},
                    {bilateral_weights, "bilateral_weights"},
                    {bilateral_neighbours, "bilateral_neighbours"},
                    {bilateral_splat_ptr, "bilateral_splat_ptr"},
                    {bilateral_splat_entries, "bilateral_splat_entries"},
                    {bilateral_splat_weights, "bilateral_splat_weights"},
                    {compat_matrices.value_or(at::Tensor()), "compat_matrices"}});
  const c10::cuda::CUDAGuard guard(unary.device());
  const MeanfieldInputs inputs = checked_meanfield_inputs(
      unary, label_mask,
      {gaussian_offsets, gaussian_weights, gaussian_neighbours, gaussian_splat_ptr, gaussian_splat_entries,
       gaussian_splat_weights},
      {bilateral_offsets, bilateral_weights, bilateral_neighbours, bilateral_splat_ptr, bilateral_splat_entries,
       bilateral_splat_weights},
      gaussian_compat, bilateral_compat, n_iter, compat_matrices);
  at::Tensor q = at::empty_like(inputs.unary);
  if (q.numel() == 0) return q;
  const MeanfieldProblem problem = make_problem(inputs, gaussian_compat, bilateral_compat);
  const lattice::LatticeView gaussian = lattice::make_view(inputs.gaussian);
  const lattice::LatticeView bilateral = lattice::make_view(inputs.bilateral);
  at::Tensor workspace = allocate_workspace(problem, gaussian, bilateral, q.options());
  const char* error = cuda::meanfield(problem, gaussian, bilateral, n_iter,
                                      carve_workspace(workspace, problem, gaussian, bilateral), q.data_ptr<float>(),
                                      c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(error == nullptr, "dense_crf_meanfield failed on the GPU: ", error == nullptr ? "" : error);
  return q;
}

}  // namespace

RRM_CUDA_KERNELS(m) { m.impl("dense_crf_meanfield", &dense_crf_meanfield_cuda); }

}  // namespace crf
}  // namespace rrm
