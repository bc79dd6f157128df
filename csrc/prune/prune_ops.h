// ATen-level entry points of the reliable-region pruning op family.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "prune/prune.h"

namespace rrm {
namespace prune {

// The validated, contiguous inputs of a pruning run.
struct PruneInputs {
  at::Tensor cams;        // float32 [B, C, P]
  at::Tensor q_low;       // float32 [B, R, P]
  at::Tensor q_high;      // float32 [B, R, P]
  at::Tensor row_labels;  // int32 [B, R] (see prune.h), or undefined: R = C+1, one row per label

  // row_labels' data, or null when every label has its row, as summarise_pixel takes it.
  const int32_t* row_labels_data() const { return row_labels.defined() ? row_labels.data_ptr<int32_t>() : nullptr; }
};

// Validates cams [B, C, P], q_low and q_high [B, C+1, P] or, with q_labels int32 [B, R], [B, R, P],
// and ignore_index against C: dtypes first, then shapes and devices.
PruneInputs checked_prune_inputs(const at::Tensor& cams, const at::Tensor& q_low, const at::Tensor& q_high,
                                 const std::optional<at::Tensor>& q_labels, int64_t ignore_index);

// Refuses CPU cams that are not finite and >= 0. The check reads the data, so CUDA cams are not
// checked: a device read would be a host synchronisation per call
// (docs/error-policy.md#value-checks-on-cuda).
void check_cams_values(const at::Tensor& cams);

// Refuses an ignore_index that is one of the labels 0..classes.
void check_ignore_index(int64_t ignore_index, int64_t classes);

PruneParams make_params(double cam_alpha, double fg_quantile, double cam_floor, double bg_sure, double crf_sure,
                        int64_t ignore_index);

}  // namespace prune
}  // namespace rrm
