// Reliable region pruning (DESIGN.md §5.4 steps 2 and 4-6): per-pixel kernel bodies shared
// by the CPU and CUDA launchers.
//
// Inputs of one batch item, channel-first with P pixels:
//   cams   float [C, P]    normalised CAMs (absent classes 0), in [0, 1]
//   q_low  float [C+1, P]  CRF marginals with the weak background (alpha_low)
//   q_high float [C+1, P]  CRF marginals with the strong background (alpha_high)
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

// First pass for pixel p of one item (pointers at the item's first element).
RRM_HOST_DEVICE inline PixelSummary summarise_pixel(const float* cams, const float* q_low, const float* q_high,
                                                    int32_t classes, int64_t pixels, int64_t p, float cam_alpha) {
  PixelSummary s;
  // classes >= 1 (checked by the launchers).
  const int32_t best_class = argmax_strided(cams + p, classes, pixels);
  const float max_cam = cams[best_class * pixels + p];
  const float background = powf(1.f - max_cam, cam_alpha);
  // Background is channel 0 of cam_all, so it wins ties with the classes.
  if (background >= max_cam) {
    s.cam_arg = 0;
    s.cam_score = background;
  } else {
    s.cam_arg = best_class + 1;
    s.cam_score = max_cam;
  }
  s.low = argmax_strided(q_low + p, classes + 1, pixels);
  s.high = argmax_strided(q_high + p, classes + 1, pixels);
  // A plain comparison: fmaxf is a library call on the CPU, and no Q is NaN.
  float conf = q_high[p];
  for (int32_t c = 1; c <= classes; ++c) {
    const float q = q_low[c * pixels + p];
    conf = q > conf ? q : conf;
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
