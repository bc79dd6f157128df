// Dense CRF mean-field inference: per-pixel kernel bodies shared by the CPU and CUDA launchers.
//
// One iteration filters the two pre-multiplied Q arrays in place with their lattices (lattice
// launchers), then runs `update_pixel` for every pixel, which forms
//   energy = -U + w_g * n_g * filtered_g + w_b * n_b * filtered_b,
// takes the softmax over the image's present labels (max-subtracted exp, divided by the sum,
// as pydensecrf's expAndNormalize) and writes the next filter inputs n_g * Q and n_b * Q over
// the filtered values it has just read. The float operations are ordered like pydensecrf's,
// so results agree with it to rounding.
//
// Layouts, for a batch of B images of P pixels, L labels and S slots:
//   unary, q       float [B, L, P]  labels-first, as the public [B, L, H, W]
//   slot_labels    int32 [B, S]     present labels of each image in ascending order, then -1;
//                                   S is at least the largest present-label count of the batch
//   norms          float [B*P]      symmetric normalisation factors of one kernel
//   unary_slots, values  float [B*P, S]  channels-last over slots, the layout the lattice filters
// Working on slots, not labels, keeps masked labels out of the filters entirely; padding
// slots hold zeros.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

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

// The float buffers of one run, carved from one allocation (see workspace_floats).
struct MeanfieldWorkspace {
  float* gaussian_norm;     // [B*P]
  float* bilateral_norm;    // [B*P]
  float* unary_slots;       // [B*P, S] the unary of each slot
  float* gaussian_values;   // [B*P, S] n_g * Q, filtered in place
  float* bilateral_values;  // [B*P, S] n_b * Q, filtered in place
  float* vertex_a;          // [max(M_g, M_b), S], shared by the two filters
  float* vertex_b;
};

inline int64_t workspace_floats(int64_t pixels, int64_t slots, int64_t max_vertices) {
  return 2 * pixels + 3 * pixels * slots + 2 * max_vertices * slots;
}

inline MeanfieldWorkspace carve_workspace(float* base, int64_t pixels, int64_t slots, int64_t max_vertices) {
  MeanfieldWorkspace ws;
  ws.gaussian_norm = base;
  ws.bilateral_norm = ws.gaussian_norm + pixels;
  ws.unary_slots = ws.bilateral_norm + pixels;
  ws.gaussian_values = ws.unary_slots + pixels * slots;
  ws.bilateral_values = ws.gaussian_values + pixels * slots;
  ws.vertex_a = ws.bilateral_values + pixels * slots;
  ws.vertex_b = ws.vertex_a + max_vertices * slots;
  return ws;
}

// 1 / sqrt(filter(1) + 1e-20) of one pixel, in double like the reference implementation.
RRM_HOST_DEVICE inline float symmetric_norm(float filtered_one) {
  return static_cast<float>(1.0 / sqrt(static_cast<double>(filtered_one) + 1e-20));
}

template <typename To, typename From>
RRM_HOST_DEVICE inline To bit_cast(From from) {
  To to;
  memcpy(&to, &from, sizeof(To));
  return to;
}

// exp(x) for x <= 0 within 1 ulp of expf (Cephes' range reduction and polynomial), flushing
// to ~1e-38 below -87. Written in plain float and integer operations so that CPU compilers
// vectorise it and CPU and CUDA evaluate the same formula.
RRM_HOST_DEVICE inline float exp_nonpositive(float x) {
  // Clamp through the bits: for x <= 0, larger magnitudes have larger unsigned patterns.
  const uint32_t minus_87 = 0xC2AE0000u;
  const uint32_t x_bits = bit_cast<uint32_t>(x);
  x = bit_cast<float>(x_bits > minus_87 ? minus_87 : x_bits);
  // Adding 1.5 * 2^23 rounds x * log2(e) to the nearest integer n and leaves n in the low bits.
  const float shifted = x * 1.44269504088896341f + 12582912.0f;
  const float n = shifted - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * (r * r) + r + 1.0f;
  const int32_t exponent = bit_cast<int32_t>(shifted) - 0x4B400000;
  return y * bit_cast<float>((exponent + 127) << 23);
}

// Transposes the unary of pixel `pixel` (a global index b*P + p) into its slot row.
RRM_HOST_DEVICE inline void gather_unary_pixel(const MeanfieldProblem& problem, float* unary_slots, int64_t pixel) {
  const int64_t image = pixel / problem.points;
  const int64_t p = pixel - image * problem.points;
  const int32_t* labels = problem.slot_labels + image * problem.slots;
  const float* unary = problem.unary + image * problem.labels * problem.points + p;
  float* row = unary_slots + pixel * problem.slots;
  for (int64_t s = 0; s < problem.slots; ++s) {
    row[s] = labels[s] >= 0 ? unary[labels[s] * problem.points] : 0.f;
  }
}

// Where one update reads and writes. Before the first iteration `filtered` is false and
// Q = softmax(-U); q is null except on the last step.
struct MeanfieldStep {
  const float* gaussian_norm;
  const float* bilateral_norm;
  const float* unary_slots;
  bool filtered;
  float* gaussian_values;
  float* bilateral_values;
  float* q;
};

// One mean-field update of pixel `pixel` (a global index b*P + p).
RRM_HOST_DEVICE inline void update_pixel(const MeanfieldProblem& problem, const MeanfieldStep& step, int64_t pixel) {
  const int64_t slots = problem.slots;
  const int64_t image = pixel / problem.points;
  const int32_t* labels = problem.slot_labels + image * slots;
  const float* unary = step.unary_slots + pixel * slots;
  const float gaussian_norm = step.gaussian_norm[pixel];
  const float bilateral_norm = step.bilateral_norm[pixel];
  // The gaussian row holds the energies, then the exponentials, then Q, then n_g * Q.
  float* row = step.gaussian_values + pixel * slots;
  float* bilateral_row = step.bilateral_values + pixel * slots;

  int64_t present = 0;
  while (present < slots && labels[present] >= 0) ++present;
  float max_energy = -INFINITY;
  for (int64_t s = 0; s < present; ++s) {
    float energy = -unary[s];
    if (step.filtered) {
      energy = energy + problem.gaussian_compat * (gaussian_norm * row[s]);
      energy = energy + problem.bilateral_compat * (bilateral_norm * bilateral_row[s]);
    }
    row[s] = energy;
    max_energy = energy > max_energy ? energy : max_energy;
  }
  for (int64_t s = 0; s < present; ++s) row[s] = exp_nonpositive(row[s] - max_energy);
  float sum = 0.f;
  for (int64_t s = 0; s < present; ++s) sum += row[s];
  for (int64_t s = 0; s < present; ++s) row[s] = row[s] / sum;

  if (step.q != nullptr) {
    const int64_t p = pixel - image * problem.points;
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
  for (int64_t s = present; s < slots; ++s) {
    row[s] = 0.f;
    bilateral_row[s] = 0.f;
  }
}

}  // namespace crf
}  // namespace rrm
