// Dense CRF mean-field inference: per-pixel kernel bodies shared by the CPU and CUDA launchers.
//
// One iteration is: filter the two pre-multiplied Q arrays with their lattices (lattice
// launchers), then `update_pixel` for every pixel, which forms
//   energy = -U + w_g * n_g * filtered_g + w_b * n_b * filtered_b,
// takes the softmax over the image's present labels (max-subtracted exp, divided by the sum,
// as pydensecrf's expAndNormalize) and writes the next filter inputs n_g * Q and n_b * Q.
// The float operations are ordered like pydensecrf's so results agree to rounding.
//
// Layouts, for a batch of B images of P pixels, L labels and S slots:
//   unary, q      float [B, L, P]  labels-first, as the public [B, L, H, W]
//   slot_labels   int32 [B, S]     present labels of each image in ascending order, then -1;
//                                  S is the largest present-label count of the batch
//   norms         float [B*P]      symmetric normalisation factors of one kernel
//   values, filtered float [B*P, S] channels-last over slots, the layout the lattice filters
// Working on slots, not labels, keeps masked labels out of the filters entirely.
#pragma once

#include <math.h>
#include <stdint.h>

#include "common/macros.h"

namespace rrm {
namespace crf {

// The fixed inputs of one mean-field run.
struct MeanfieldProblem {
  const float* unary;
  const int32_t* slot_labels;
  int64_t points;  // P
  int64_t labels;  // L
  int64_t slots;   // S
  float gaussian_compat;
  float bilateral_compat;
};

// Where one update reads the filtered arrays and writes its results. Before the first
// iteration the filtered arrays are null (Q = softmax(-U)); q is null except on the last step.
struct MeanfieldStep {
  const float* gaussian_norm;
  const float* bilateral_norm;
  const float* gaussian_filtered;
  const float* bilateral_filtered;
  float* gaussian_values;
  float* bilateral_values;
  float* q;
};

// The float buffers of one run, carved from one allocation (see workspace_floats).
struct MeanfieldWorkspace {
  float* gaussian_norm;       // [B*P]
  float* bilateral_norm;      // [B*P]
  float* gaussian_values;     // [B*P, S]
  float* bilateral_values;    // [B*P, S]
  float* gaussian_filtered;   // [B*P, S]
  float* bilateral_filtered;  // [B*P, S]
  float* vertex_a;            // [max(M_g, M_b), S], shared by the two filters
  float* vertex_b;
};

inline int64_t workspace_floats(int64_t pixels, int64_t slots, int64_t max_vertices) {
  return 2 * pixels + 4 * pixels * slots + 2 * max_vertices * slots;
}

inline MeanfieldWorkspace carve_workspace(float* base, int64_t pixels, int64_t slots, int64_t max_vertices) {
  MeanfieldWorkspace ws;
  ws.gaussian_norm = base;
  ws.bilateral_norm = ws.gaussian_norm + pixels;
  ws.gaussian_values = ws.bilateral_norm + pixels;
  ws.bilateral_values = ws.gaussian_values + pixels * slots;
  ws.gaussian_filtered = ws.bilateral_values + pixels * slots;
  ws.bilateral_filtered = ws.gaussian_filtered + pixels * slots;
  ws.vertex_a = ws.bilateral_filtered + pixels * slots;
  ws.vertex_b = ws.vertex_a + max_vertices * slots;
  return ws;
}

// 1 / sqrt(filter(1) + 1e-20) of one pixel, in double like the reference implementation.
RRM_HOST_DEVICE inline float symmetric_norm(float filtered_one) {
  return static_cast<float>(1.0 / sqrt(static_cast<double>(filtered_one) + 1e-20));
}

// One mean-field update of pixel `pixel` (a global index b*P + p).
RRM_HOST_DEVICE inline void update_pixel(const MeanfieldProblem& problem, const MeanfieldStep& step, int64_t pixel) {
  const int64_t slots = problem.slots;
  const int64_t image = pixel / problem.points;
  const int64_t p = pixel - image * problem.points;
  const int32_t* labels = problem.slot_labels + image * slots;
  const float* unary = problem.unary + image * problem.labels * problem.points + p;
  const float gaussian_norm = step.gaussian_norm[pixel];
  const float bilateral_norm = step.bilateral_norm[pixel];
  // The energies and then the exponentials live in the gaussian values row until the end.
  float* row = step.gaussian_values + pixel * slots;
  float* bilateral_row = step.bilateral_values + pixel * slots;

  int64_t present = 0;
  float max_energy = -INFINITY;
  for (; present < slots && labels[present] >= 0; ++present) {
    float energy = -unary[labels[present] * problem.points];
    if (step.gaussian_filtered != nullptr) {
      const int64_t at = pixel * slots + present;
      energy = energy + problem.gaussian_compat * (gaussian_norm * step.gaussian_filtered[at]);
      energy = energy + problem.bilateral_compat * (bilateral_norm * step.bilateral_filtered[at]);
    }
    row[present] = energy;
    max_energy = energy > max_energy ? energy : max_energy;
  }
  float sum = 0.f;
  for (int64_t s = 0; s < present; ++s) {
    row[s] = expf(row[s] - max_energy);
    sum += row[s];
  }
  for (int64_t s = 0; s < present; ++s) row[s] = row[s] / sum;

  if (step.q != nullptr) {
    float* q = step.q + image * problem.labels * problem.points + p;
    int64_t s = 0;
    for (int64_t label = 0; label < problem.labels; ++label) {
      const bool is_present = s < present && labels[s] == label;
      q[label * problem.points] = is_present ? row[s] : 0.f;
      s += is_present ? 1 : 0;
    }
  }
  for (int64_t s = 0; s < present; ++s) {
    bilateral_row[s] = bilateral_norm * row[s];
    row[s] = gaussian_norm * row[s];
  }
  // Padding slots stay zero so they carry nothing through the filters.
  for (int64_t s = present; s < slots; ++s) {
    row[s] = 0.f;
    bilateral_row[s] = 0.f;
  }
}

}  // namespace crf
}  // namespace rrm
