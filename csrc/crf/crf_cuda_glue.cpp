// ATen -> raw pointer glue for the CUDA dense CRF launcher (compiled only in CUDA builds).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common/checks.h"
#include "common/cuda_errors.h"
#include "common/library.h"
#include "crf/crf_cuda.h"
#include "crf/crf_ops.h"

namespace rrm {
namespace crf {
namespace {

at::Tensor dense_crf_meanfield_cuda(const at::Tensor& unary, const std::optional<at::Tensor>& label_mask,
                                    at::TensorList gaussian_lattice, at::TensorList bilateral_lattice,
                                    double gaussian_compat, double bilateral_compat, int64_t n_iter,
                                    const std::optional<at::Tensor>& compat_matrices) {
  const lattice::LatticeTuple gaussian_tensors = lattice::lattice_of(gaussian_lattice, "gaussian");
  const lattice::LatticeTuple bilateral_tensors = lattice::lattice_of(bilateral_lattice, "bilateral");
  check_one_device({{unary, "unary"}, {label_mask.value_or(at::Tensor()), "label_mask"}});
  lattice::check_lattice_device(gaussian_tensors, "gaussian", unary, "unary");
  lattice::check_lattice_device(bilateral_tensors, "bilateral", unary, "unary");
  check_one_device({{unary, "unary"}, {compat_matrices.value_or(at::Tensor()), "compat_matrices"}});
  const c10::cuda::CUDAGuard guard(unary.device());
  const MeanfieldInputs inputs = checked_meanfield_inputs(unary, label_mask, gaussian_tensors, bilateral_tensors,
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
  check_launch(error, "dense_crf_meanfield");
  return q;
}

}  // namespace

RRM_CUDA_KERNELS(m) { m.impl("dense_crf_meanfield", &dense_crf_meanfield_cuda); }

}  // namespace crf
}  // namespace rrm
