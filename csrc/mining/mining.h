// Reliable region mining, step 3 of docs/design.md#reliable-region-mining: the per-pixel body
// that writes the unaries of both CRFs straight into the mean field's slot rows, shared by the
// CPU and CUDA launchers.
//
// The two CRFs of an image differ only in the background score (1 - max_c cam)^alpha, so they
// run as the two groups of one mean field (see crf/crf.h): group 0 with alpha_low, group 1 with
// alpha_high, sharing the slot table and both lattices. Writing the slot unaries directly skips
// the [2, B, C+1, P] score and unary tensors of the composite it replaces.
#pragma once

#include <math.h>
#include <stdint.h>

#include "common/float_math.h"
#include "common/macros.h"
#include "crf/crf.h"

namespace rrm {
namespace mining {

constexpr int kCrfGroups = 2;

struct MiningUnary {
  const float* cams;            // [B, C, P] normalised, absent classes 0 (C = L - 1)
  const float* max_cam;         // [B, P] max over the classes of cams
  float alpha[kCrfGroups];      // background power of each group: alpha_low, alpha_high
};

// pydensecrf's unary_from_softmax: -log(clip(score, 1e-5, 1)), with the log of
// common/float_math.h, the same bits on every device.
RRM_HOST_DEVICE inline float unary_of_score(float score) {
  const float clipped = score < 1e-5f ? 1e-5f : (score > 1.f ? 1.f : score);
  return -float_math::log_float(clipped);
}

// The slot unaries of pixel `pixel` (a global index b*P + p) for both groups; padding slots get
// +inf, so their Q is exactly 0 (as gather_unary_pixels gives them). problem.groups must be 2.
RRM_HOST_DEVICE inline void mining_unary_pixel(const MiningUnary& unary, const crf::MeanfieldProblem& problem,
                                               float* unary_slots, int64_t pixel) {
  const int64_t image = pixel / problem.points;
  const int64_t p = pixel - image * problem.points;
  const int32_t* labels = problem.slot_labels + image * problem.slots;
  const float* cams = unary.cams + image * (problem.labels - 1) * problem.points + p;
  const float not_object = 1.f - unary.max_cam[pixel];
  const int64_t channels = crf::slot_channels(problem);
  for (int64_t s = 0; s < problem.slots; ++s) {
    const int32_t label = labels[s];
    // Only the background differs between the groups; a class's log is taken once for both.
    const float shared = label > 0 ? unary_of_score(cams[(label - 1) * problem.points]) : INFINITY;
    for (int g = 0; g < kCrfGroups; ++g) {
      const float value = label == 0 ? unary_of_score(float_math::pow_float(not_object, unary.alpha[g])) : shared;
      unary_slots[crf::unary_index(pixel, g * problem.slots + s, channels)] = value;
    }
  }
}

}  // namespace mining
}  // namespace rrm
