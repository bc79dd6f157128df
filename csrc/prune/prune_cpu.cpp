// CPU launcher of prune_reliable_labels: the bodies of prune.h as one run of phase_runner.h,
// each item a stream, and an exact per-(item, class) order statistic with std::nth_element.

#include <algorithm>
#include <limits>
#include <optional>
#include <vector>

#include "common/library.h"
#include "common/phase_runner.h"
#include "prune/prune.h"
#include "prune/prune_ops.h"

namespace rrm {
namespace prune {
namespace {

// Pixels per chunk; a thread pays for itself from about kPixelsPerThread pixels on.
constexpr int64_t kPixelChunk = 2048;
constexpr int64_t kPixelsPerThread = 16384;

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

// Per item: each pixel's summary, the item's thresholds, each pixel's label.
class PrunePlan {
 public:
  PrunePlan(const PruneInputs& inputs, const PruneParams& params, int32_t classes, int64_t pixels, int64_t* labels,
            bool* sure)
      : params_(params),
        classes_(classes),
        pixels_(pixels),
        rows_(static_cast<int32_t>(inputs.q_low.size(1))),
        cams_(inputs.cams.data_ptr<float>()),
        q_low_(inputs.q_low.data_ptr<float>()),
        q_high_(inputs.q_high.data_ptr<float>()),
        row_labels_(inputs.row_labels_data()),
        labels_(labels),
        sure_(sure),
        summaries_(inputs.cams.size(0) * pixels),
        thresholds_(inputs.cams.size(0) * (classes + 1)) {}

  int64_t phases() const { return kPrunePhases; }
  int64_t chunks(int64_t, int64_t phase) const { return phase == kThresholds ? 1 : chunks_of(pixels_, kPixelChunk); }

  void run(int64_t item, int64_t phase, int64_t chunk, int) {
    if (phase == kThresholds) {
      item_thresholds(summaries_.data() + item * pixels_, pixels_, classes_, params_,
                      thresholds_.data() + item * (classes_ + 1));
      return;
    }
    const int64_t begin = item * pixels_ + chunk * kPixelChunk;
    const int64_t end = std::min(begin + kPixelChunk, (item + 1) * pixels_);
    for (int64_t i = begin; i < end; ++i) {
      if (phase == kSummarise) {
        summaries_[i] = summarise_pixel(cams_ + item * classes_ * pixels_, q_low_ + item * rows_ * pixels_,
                                        q_high_ + item * rows_ * pixels_, classes_, pixels_, i % pixels_,
                                        params_.cam_alpha,
                                        row_labels_ == nullptr ? nullptr : row_labels_ + item * rows_, rows_);
      } else {
        const PixelSummary& s = summaries_[i];
        const float threshold = thresholds_[item * (classes_ + 1) + s.cam_arg];
        labels_[i] = reliable_label(s, threshold, params_.crf_sure, params_.ignore_index, sure_ + i);
      }
    }
  }

  void finish(int64_t, int64_t) {}

 private:
  enum Phase : int64_t { kSummarise, kThresholds, kLabel, kPrunePhases };

  const PruneParams params_;
  const int32_t classes_;
  const int64_t pixels_;
  const int32_t rows_;
  const float* cams_;
  const float* q_low_;
  const float* q_high_;
  const int32_t* row_labels_;
  int64_t* labels_;
  bool* sure_;
  std::vector<PixelSummary> summaries_;
  std::vector<float> thresholds_;
};

std::tuple<at::Tensor, at::Tensor> prune(const at::Tensor& cams_in, const at::Tensor& q_low_in,
                                                             const at::Tensor& q_high_in, double cam_alpha,
                                                             double fg_quantile, double cam_floor, double bg_sure,
                                                             double crf_sure, int64_t ignore_index,
                                                             const std::optional<at::Tensor>& q_labels) {
  const PruneInputs inputs = checked_prune_inputs(cams_in, q_low_in, q_high_in, q_labels, ignore_index);
  const PruneParams params = make_params(cam_alpha, fg_quantile, cam_floor, bg_sure, crf_sure, ignore_index);
  check_cams_values(inputs.cams);
  const at::Tensor& cams = inputs.cams;
  const int64_t batch = cams.size(0);
  const int32_t classes = static_cast<int32_t>(cams.size(1));
  const int64_t pixels = cams.size(2);
  at::Tensor labels = at::empty({batch, pixels}, cams.options().dtype(at::kLong));
  at::Tensor sure = at::empty({batch, pixels}, cams.options().dtype(at::kBool));
  if (batch * pixels == 0) return {labels, sure};

  PrunePlan plan(inputs, params, classes, pixels, labels.data_ptr<int64_t>(), sure.data_ptr<bool>());
  run_phases(plan, batch, phase_threads(batch * pixels, kPixelsPerThread));
  return {labels, sure};
}

// One team (phase_runner.h) for the op's run and its ATen calls: one parallel region.
std::tuple<at::Tensor, at::Tensor> prune_reliable_labels_cpu(const at::Tensor& cams, const at::Tensor& q_low,
                                                             const at::Tensor& q_high, double cam_alpha,
                                                             double fg_quantile, double cam_floor, double bg_sure,
                                                             double crf_sure, int64_t ignore_index,
                                                             const std::optional<at::Tensor>& q_labels) {
  std::tuple<at::Tensor, at::Tensor> result;
  const int64_t pixels = cams.dim() == 3 ? cams.size(0) * cams.size(2) : 0;
  with_team(phase_threads(pixels, kPixelsPerThread), [&] {
    result = prune(cams, q_low, q_high, cam_alpha, fg_quantile, cam_floor, bg_sure, crf_sure, ignore_index, q_labels);
  });
  return result;
}

}  // namespace

RRM_CPU_KERNELS(m) { m.impl("prune_reliable_labels", &prune_reliable_labels_cpu); }

}  // namespace prune
}  // namespace rrm
