// ATen-level entry points of the reliable-region pruning op family.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "prune/prune.h"

namespace rrm {
namespace prune {

// Validates cams [B, C, P] and q_low, q_high [B, C+1, P] (float32); returns them contiguous.
std::tuple<at::Tensor, at::Tensor, at::Tensor> checked_prune_inputs(const at::Tensor& cams, const at::Tensor& q_low,
                                                                    const at::Tensor& q_high);

PruneParams make_params(double cam_alpha, double fg_quantile, double cam_floor, double bg_sure, double crf_sure,
                        int64_t ignore_index);


}  // namespace prune
}  // namespace rrm
