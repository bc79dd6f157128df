// ATen -> raw pointer glue for the CUDA mining launcher (compiled only in CUDA builds).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common/checks.h"
#include "common/cuda_errors.h"
#include "common/library.h"
#include "crf/crf_ops.h"
#include "mining/mining_cuda.h"
#include "mining/mining_ops.h"

namespace rrm {
namespace mining {
namespace {

void meanfield_cuda(const MiningUnary& unary, const crf::MeanfieldProblem& problem,
                    const lattice::LatticeView& gaussian, const lattice::LatticeView& bilateral, int64_t n_iter,
                    const crf::MeanfieldWorkspace& ws, float* q) {
  check_launch(cuda::meanfield(unary, problem, gaussian, bilateral, n_iter, ws, q, c10::cuda::getCurrentCUDAStream()),
               "reliable_region_labels");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> reliable_region_labels_cuda(
    const at::Tensor& cams, const at::Tensor& cls_labels, const at::Tensor& images, double alpha_low,
    double alpha_high, int64_t n_iter, double gaussian_sxy, double gaussian_compat, double bilateral_sxy,
    double bilateral_srgb, double bilateral_compat, double cam_alpha, double fg_quantile, double cam_floor,
    double bg_sure, double crf_sure, int64_t ignore_index, bool return_q) {
  check_one_device({{cams, "cams"}, {images, "images"}});
  check_cls_labels_device(cls_labels, cams);
  const c10::cuda::CUDAGuard guard(cams.device());
  const crf::Params crf_params{n_iter, gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb, bilateral_compat};
  return reliable_region_labels(cams, cls_labels, images, alpha_low, alpha_high, crf_params, cam_alpha, fg_quantile,
                                cam_floor, bg_sure, crf_sure, ignore_index, return_q,
                                &meanfield_cuda);
}

}  // namespace

RRM_CUDA_KERNELS(m) { m.impl("reliable_region_labels", &reliable_region_labels_cuda); }

}  // namespace mining
}  // namespace rrm
