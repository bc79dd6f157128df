// CPU launcher of prune_reliable_labels: at::parallel_for over the bodies of prune.h, and an
// exact per-(item, class) order statistic with std::nth_element.
#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <vector>

#include "common/library.h"
#include "prune/prune.h"
#include "prune/prune_ops.h"

namespace rrm {
namespace prune {
namespace {

constexpr int64_t kPixelGrain = 2048;

// Thresholds [C+1] of the labels of one item (see prune.h), from one pass over its pixels that
// records which labels occur in `low` and buckets the quantile candidates by class.
void item_thresholds(const PixelSummary* summaries, int64_t pixels, int32_t classes, const PruneParams& params,
                     float* thresholds) {
  std::vector<char> occurs_in_low(classes + 1, 0);
  std::vector<std::vector<float>> candidates(classes + 1);
  for (int64_t p = 0; p < pixels; ++p) {
    const PixelSummary& s = summaries[p];
    occurs_in_low[s.low] = 1;
    if (is_quantile_candidate(s, params.cam_floor)) candidates[s.cam_arg].push_back(s.cam_score);
  }
  constexpr float kNever = std::numeric_limits<float>::infinity();
  thresholds[0] = occurs_in_low[0] ? params.bg_sure : kNever;
  for (int32_t label = 1; label <= classes; ++label) {
    std::vector<float>& values = candidates[label];
    if (!occurs_in_low[label] || values.empty()) {
      thresholds[label] = kNever;
      continue;
    }
    const int64_t rank = quantile_rank(static_cast<int64_t>(values.size()), params.fg_quantile);
    std::nth_element(values.begin(), values.begin() + rank, values.end());
    thresholds[label] = values[rank];
  }
}

std::tuple<at::Tensor, at::Tensor> prune_reliable_labels_cpu(const at::Tensor& cams_in, const at::Tensor& q_low_in,
                                                             const at::Tensor& q_high_in, double cam_alpha,
                                                             double fg_quantile, double cam_floor, double bg_sure,
                                                             double crf_sure, int64_t ignore_index,
                                                             const std::optional<at::Tensor>& q_labels) {
  const PruneParams params = make_params(cam_alpha, fg_quantile, cam_floor, bg_sure, crf_sure, ignore_index);
  const PruneInputs inputs = checked_prune_inputs(cams_in, q_low_in, q_high_in, q_labels);
  const at::Tensor& cams = inputs.cams;
  const int64_t batch = cams.size(0);
  const int32_t classes = static_cast<int32_t>(cams.size(1));
  const int64_t pixels = cams.size(2);
  at::Tensor labels = at::empty({batch, pixels}, cams.options().dtype(at::kLong));
  at::Tensor sure = at::empty({batch, pixels}, cams.options().dtype(at::kBool));
  if (batch * pixels == 0) return {labels, sure};

  std::vector<PixelSummary> summaries(batch * pixels);
  const float* cam_data = cams.data_ptr<float>();
  const float* low_data = inputs.q_low.data_ptr<float>();
  const float* high_data = inputs.q_high.data_ptr<float>();
  const int32_t rows = static_cast<int32_t>(inputs.q_low.size(1));
  const int32_t* row_labels = inputs.row_labels_data();
  at::parallel_for(0, batch * pixels, kPixelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / pixels;
      summaries[i] = summarise_pixel(cam_data + b * classes * pixels, low_data + b * rows * pixels,
                                     high_data + b * rows * pixels, classes, pixels, i % pixels, params.cam_alpha,
                                     row_labels == nullptr ? nullptr : row_labels + b * rows, rows);
    }
  });

  std::vector<float> thresholds(batch * (classes + 1));
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      item_thresholds(summaries.data() + b * pixels, pixels, classes, params, thresholds.data() + b * (classes + 1));
    }
  });

  int64_t* label_data = labels.data_ptr<int64_t>();
  bool* sure_data = sure.data_ptr<bool>();
  at::parallel_for(0, batch * pixels, kPixelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const PixelSummary& s = summaries[i];
      const float threshold = thresholds[(i / pixels) * (classes + 1) + s.cam_arg];
      label_data[i] = reliable_label(s, threshold, params.crf_sure, params.ignore_index, sure_data + i);
    }
  });
  return {labels, sure};
}

}  // namespace

RRM_CPU_KERNELS(m) { m.impl("prune_reliable_labels", &prune_reliable_labels_cpu); }

}  // namespace prune
}  // namespace rrm
