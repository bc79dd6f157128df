// Device-independent validation of the pruning op's arguments.
#include "common/checks.h"
#include "common/device.h"
#include "prune/prune_ops.h"

namespace rrm {
namespace prune {

PruneParams make_params(double cam_alpha, double fg_quantile, double cam_floor, double bg_sure, double crf_sure,
                        int64_t ignore_index) {
  TORCH_CHECK_VALUE(cam_alpha > 0 && std::isfinite(cam_alpha), "cam_alpha must be a positive number, got ",
                    cam_alpha);
  TORCH_CHECK_VALUE(fg_quantile >= 0 && fg_quantile < 1, "fg_quantile must be in [0, 1), got ", fg_quantile);
  TORCH_CHECK_VALUE(cam_floor >= 0 && cam_floor < 1, "cam_floor must be in [0, 1), got ", cam_floor);
  TORCH_CHECK_VALUE(bg_sure >= 0 && bg_sure <= 1, "bg_sure must be in [0, 1], got ", bg_sure);
  TORCH_CHECK_VALUE(crf_sure >= 0 && crf_sure <= 1, "crf_sure must be in [0, 1], got ", crf_sure);
  return PruneParams{static_cast<float>(cam_alpha), fg_quantile, static_cast<float>(cam_floor),
                     static_cast<float>(bg_sure), static_cast<float>(crf_sure), ignore_index};
}

void check_ignore_index(int64_t ignore_index, int64_t classes) {
  TORCH_CHECK_VALUE(ignore_index < 0 || ignore_index > classes, "ignore_index must not be a label (0..", classes,
                    " for C = ", classes, " classes), got ", ignore_index);
}

PruneInputs checked_prune_inputs(const at::Tensor& cams, const at::Tensor& q_low, const at::Tensor& q_high,
                                 const std::optional<at::Tensor>& q_labels, int64_t ignore_index) {
  check_dtype(cams, at::kFloat, "cams");
  check_dtype(q_low, at::kFloat, "q_low");
  check_dtype(q_high, at::kFloat, "q_high");
  if (q_labels.has_value()) check_dtype(*q_labels, at::kInt, "q_labels");
  check_dim(cams, 3, "cams", "[B, C, P]");
  TORCH_CHECK_VALUE(cams.size(1) >= 1, "cams must have at least one class, got shape ", shape_of(cams));
  int64_t rows = cams.size(1) + 1;
  PruneInputs inputs;
  if (q_labels.has_value()) {
    check_dim(*q_labels, 2, "q_labels", "[B, R]");
    TORCH_CHECK_VALUE(q_labels->size(0) == cams.size(0) && q_labels->size(1) >= 1,
                      "q_labels must be [B, R] with the B = ", cams.size(0), " of cams and R >= 1, got ",
                      shape_of(*q_labels));
    check_same_device(*q_labels, "q_labels", cams, "cams");
    rows = q_labels->size(1);
    inputs.row_labels = q_labels->contiguous();
  }
  const std::vector<int64_t> q_shape{cams.size(0), rows, cams.size(2)};
  for (const auto& [q, name] : {std::pair{&q_low, "q_low"}, std::pair{&q_high, "q_high"}}) {
    TORCH_CHECK_VALUE(q->sizes() == at::IntArrayRef(q_shape), name, " must be [B, ",
                      q_labels.has_value() ? "R" : "C+1", ", P] = [", q_shape[0], ", ", q_shape[1], ", ",
                      q_shape[2], "], got ", shape_of(*q));
    check_same_device(*q, name, cams, "cams");
  }
  check_ignore_index(ignore_index, cams.size(1));
  inputs.cams = cams.contiguous();
  inputs.q_low = q_low.contiguous();
  inputs.q_high = q_high.contiguous();
  return inputs;
}

void check_cams_values(const at::Tensor& cams) {
  if (!is_host(cams.device()) || cams.numel() == 0) return;
  const Extremes extremes = extremes_of(cams);
  TORCH_CHECK_VALUE(std::isfinite(extremes.minimum) && std::isfinite(extremes.maximum) && extremes.minimum >= 0,
                    "cams must be finite and >= 0, got range [", extremes.minimum, ", ", extremes.maximum, "]");
}

}  // namespace prune
}  // namespace rrm
