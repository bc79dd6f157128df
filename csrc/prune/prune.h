// Reliable region pruning, steps 2 and 4-6 of docs/design.md#reliable-region-mining: per-pixel
// kernel bodies shared by the CPU and CUDA launchers.
//
// Inputs of one batch item, channel-first with P pixels:
//   cams   float [C, P]    normalised CAMs (absent classes 0), in [0, 1]
//   q_low  float [R, P]    CRF marginals with the weak background (alpha_low)
//   q_high float [R, P]    CRF marginals with the strong background (alpha_high)
// The R rows of Q are either every label 0..C (R = C+1), or the item's present labels in
// ascending order then padding (R slots, row_labels [R] giving each row's label, -1 for
// padding): labels absent from the rows have Q = 0, which never changes an argmax (the present
// labels' Q sum to 1) or the confidence maximum, so both layouts give the same summaries.
// Per pixel the first pass derives
//   cam_arg   argmax of cam_all = [(1 - max_c cam)^cam_alpha ; cams] (first maximum wins)
//   cam_score cam_all[cam_arg], the pixel's value in the sure-CAM map s_{cam_arg}
//   low, high argmax of q_low, q_high; conf = max(q_high[0], q_low[1:])
// Then each (item, label) gets a threshold: background bg_sure; an object class the value
// t = sorted[floor(n * fg_quantile)] of its n candidate scores (> cam_floor) ascending; +inf
// when the label does not occur in `low` or has no candidate. A pixel is sure when
// cam_score > threshold[cam_arg].
#pragma once

#include <math.h>
#include <stdint.h>

#include "common/float_math.h"
#include "common/macros.h"

namespace rrm {
namespace prune {

struct PruneParams {
  float cam_alpha;
  double fg_quantile;
  float cam_floor;
  float bg_sure;
  float crf_sure;
  int64_t ignore_index;
};

struct PixelSummary {
  int32_t cam_arg;
  int32_t low;
  int32_t high;
  float cam_score;
  float conf;
};

template <typename Index>
RRM_HOST_DEVICE inline int32_t argmax_strided(const float* values, int32_t count, Index stride) {
  int32_t best = 0;
  for (int32_t k = 1; k < count; ++k) {
    if (values[k * stride] > values[best * stride]) best = k;
  }
  return best;
}

// The label of row `row` of an item's Q (see the layouts above); row_labels null: every label.
RRM_HOST_DEVICE inline int32_t row_label(const int32_t* row_labels, int32_t row) {
  return row_labels == nullptr ? row : row_labels[row];
}

// First pass for pixel p of one item (pointers at the item's first element); q_low and q_high
// have `rows` rows labelled by row_labels (null: rows = C+1, one per label).
RRM_HOST_DEVICE inline PixelSummary summarise_pixel(const float* cams, const float* q_low, const float* q_high,
                                                    int32_t classes, int64_t pixels, int64_t p, float cam_alpha,
                                                    const int32_t* row_labels, int32_t rows) {
  PixelSummary s;
  // classes >= 1 (checked by the launchers).
  const int32_t best_class = argmax_strided(cams + p, classes, pixels);
  const float max_cam = cams[best_class * pixels + p];
  // The power of common/float_math.h, as mining's unary: the same bits on every device.
  const float background = float_math::pow_float(1.f - max_cam, cam_alpha);
  // Background is channel 0 of cam_all, so it wins ties with the classes.
  if (background >= max_cam) {
    s.cam_arg = 0;
    s.cam_score = background;
  } else {
    s.cam_arg = best_class + 1;
    s.cam_score = max_cam;
  }
  // A row without a label can only win when every Q is 0 (no label present), where the
  // all-label layout's argmax is label 0.
  const int32_t low = row_label(row_labels, argmax_strided(q_low + p, rows, pixels));
  const int32_t high = row_label(row_labels, argmax_strided(q_high + p, rows, pixels));
  // Out-of-range row labels (never written by this project) are read as label 0, not followed.
  s.low = low < 0 || low > classes ? 0 : low;
  s.high = high < 0 || high > classes ? 0 : high;
  // max(q_high[0], q_low[1:]); a plain comparison, as fmaxf is a library call on the CPU and
  // no Q is NaN. Label 0 is the first row whenever it is present.
  float conf = row_label(row_labels, 0) == 0 ? q_high[p] : 0.f;
  for (int32_t row = 0; row < rows; ++row) {
    const float q = q_low[row * pixels + p];
    if (row_label(row_labels, row) >= 1 && q > conf) conf = q;
  }
  s.conf = conf;
  return s;
}

// Whether the pixel's score enters its class's quantile (objects only).
RRM_HOST_DEVICE inline bool is_quantile_candidate(const PixelSummary& s, float cam_floor) {
  return s.cam_arg > 0 && s.cam_score > cam_floor;
}

// Index of the order statistic among n ascending candidates.
RRM_HOST_DEVICE inline int64_t quantile_rank(int64_t n, double fg_quantile) {
  const int64_t rank = static_cast<int64_t>(floor(static_cast<double>(n) * fg_quantile));
  return rank < n - 1 ? rank : n - 1;
}

// Final label of a pixel given its summary and its class threshold.
RRM_HOST_DEVICE inline int64_t reliable_label(const PixelSummary& s, float threshold, float crf_sure,
                                              int64_t ignore_index, bool* sure) {
  *sure = s.cam_score > threshold;
  int64_t label = s.low == 0 ? ignore_index : s.low;
  if (s.high == 0) label = 0;
  if (s.conf < crf_sure || !*sure) label = ignore_index;
  return label;
}

}  // namespace prune
}  // namespace rrm
