// ATen -> raw pointer glue for the CUDA pruning launcher (compiled only in CUDA builds).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common/checks.h"
#include "common/cuda_errors.h"
#include "common/cuda_scratch.h"
#include "common/library.h"
#include "prune/prune_cuda.h"
#include "prune/prune_ops.h"

namespace rrm {
namespace prune {
namespace {

// Refuses a batch the launcher's one sort cannot take: more items than CUB's int count, or
// keys wider than 64 bits.
void check_sortable(int64_t batch, int32_t classes, int64_t pixels) {
  TORCH_CHECK(batch * pixels <= cuda::kMaxSortedPixels, "prune_reliable_labels on CUDA sorts at most ",
              cuda::kMaxSortedPixels, " pixels per call (B * P), got ", batch, " * ", pixels, " = ", batch * pixels,
              "; split the batch");
  TORCH_CHECK(cuda::sort_key_bits(batch, classes) <= 64,
              "prune_reliable_labels on CUDA needs the bits of B - 1 and of C + 1 to fit in 32 together, got B = ",
              batch, " and C = ", classes);
}

std::tuple<at::Tensor, at::Tensor> prune_reliable_labels_cuda(const at::Tensor& cams_in, const at::Tensor& q_low_in,
                                                              const at::Tensor& q_high_in, double cam_alpha,
                                                              double fg_quantile, double cam_floor, double bg_sure,
                                                              double crf_sure, int64_t ignore_index,
                                                              const std::optional<at::Tensor>& q_labels) {
  check_one_device(
      {{cams_in, "cams"}, {q_low_in, "q_low"}, {q_high_in, "q_high"}, {q_labels.value_or(at::Tensor()), "q_labels"}});
  const PruneParams params = make_params(cam_alpha, fg_quantile, cam_floor, bg_sure, crf_sure, ignore_index);
  const PruneInputs inputs = checked_prune_inputs(cams_in, q_low_in, q_high_in, q_labels);
  const at::Tensor& cams = inputs.cams;
  const c10::cuda::CUDAGuard guard(cams.device());
  const int64_t batch = cams.size(0);
  const int64_t pixels = cams.size(2);
  if (batch * pixels > 0) check_sortable(batch, static_cast<int32_t>(cams.size(1)), pixels);
  at::Tensor labels = at::empty({batch, pixels}, cams.options().dtype(at::kLong));
  at::Tensor sure = at::empty({batch, pixels}, cams.options().dtype(at::kBool));
  if (batch * pixels == 0) return {labels, sure};
  DeviceScratch scratch(cams.device());
  const char* error = cuda::prune_reliable_labels(
      cams.data_ptr<float>(), inputs.q_low.data_ptr<float>(), inputs.q_high.data_ptr<float>(),
      inputs.row_labels_data(),
      static_cast<int32_t>(inputs.q_low.size(1)), batch, static_cast<int32_t>(cams.size(1)), pixels, params,
      labels.data_ptr<int64_t>(), sure.data_ptr<bool>(), scratch.allocator(), c10::cuda::getCurrentCUDAStream());
  check_launch(error, "prune_reliable_labels");
  return {labels, sure};
}

}  // namespace

RRM_CUDA_KERNELS(m) { m.impl("prune_reliable_labels", &prune_reliable_labels_cuda); }

}  // namespace prune
}  // namespace rrm
