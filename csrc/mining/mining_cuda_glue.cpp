// ATen -> raw pointer glue for the CUDA mining launcher (compiled only in CUDA builds).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common/checks.h"
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
  const char* error =
      cuda::meanfield(unary, problem, gaussian, bilateral, n_iter, ws, q, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(error == nullptr, "reliable_region_labels failed on the GPU: ", error == nullptr ? "" : error);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> reliable_region_labels_cuda(
    const at::Tensor& cams, const at::Tensor& cls_labels, const at::Tensor& images, double alpha_low,
    double alpha_high, double cam_alpha, double fg_quantile, double cam_floor, double bg_sure, double crf_sure,
    int64_t ignore_index, bool return_q) {
  check_one_device({{cams, "cams"}, {images, "images"}});
  check_cls_labels_device(cls_labels, cams);
  const c10::cuda::CUDAGuard guard(cams.device());
  return reliable_region_labels(cams, cls_labels, images, alpha_low, alpha_high, cam_alpha, fg_quantile, cam_floor,
                                bg_sure, crf_sure, ignore_index, return_q,
                                &meanfield_cuda);
}

}  // namespace

RRM_CUDA_KERNELS(m) { m.impl("reliable_region_labels", &reliable_region_labels_cuda); }

}  // namespace mining
}  // namespace rrm
