// Dense CRF mean-field inference: per-pixel kernel bodies shared by the CPU and CUDA launchers.
//
// One iteration splats n_g * Q and n_b * Q into their lattices and blurs them, then runs
// `update_pixel` for every pixel, which slices both lattices at the pixel, forms
//   energy = -U + ((w_g * a_g) * n_g) * sum_g + ((w_b * a_b) * n_b) * sum_b,
// (sum_k the barycentric sum of kernel k's blurred values at the pixel, a_k its lattice's slice
// scale, so that a_k * sum_k is the filtered value), or, with label compatibility matrices mu_k,
//   energy_l = -U_l + sum_m mu_g[l, m] f_g,m + sum_m mu_b[l, m] f_b,m   (f_k = ((w_k * a_k) * n_k) * sum_k),
// summed over the present labels m in ascending order, takes the softmax over the image's present
// labels (max-subtracted exp times the inverse of its sum, as pydensecrf's expAndNormalize
// divides by the sum) and writes the pixel's new Q.
// Slicing inside the update keeps the filtered values in registers. On CUDA the splat gathers
// each vertex's entries (the lattice launchers); on the CPU each stripe of pixels scatters its
// new Q right after updating it (crf_cpu.cpp). The float operations are ordered like
// pydensecrf's but for the scales applied to the sums once per slot instead of to every entry
// of the slice, the softmax's maximum and sum (taken in kSlotLanes lanes), its final product,
// and the CPU's sum of the stripes' partial splats, so results agree with it to rounding.
//
// Layouts, for a batch of B images of P pixels, L labels, S slots and G groups:
//   unary, q       float [G, B, L, P]  labels-first, as the public [B, L, H, W] (G = 1); q may
//                                   instead be [G, B, S, P] over slots (q_over_slots)
//   slot_labels    int32 [B, S]     present labels of each image in ascending order, then -1;
//                                   S is at least the largest present-label count of the batch
//                                   and a multiple of kSlotLanes
//   norms          float [B*P]      symmetric normalisation factors of one kernel
//   q_slots        float [B*P, G*S] channels-last over slots, the layout the lattice filters;
//                                   group g's slot s is channel g*S + s
//   unary_slots    float            the same channels in blocks of kUnaryBlock pixels, channel-
//                                   major within a block (see unary_index)
// A group is an independent CRF on the same images and lattices with its own unary (mining runs
// its two background strengths as two groups): the filters are linear per channel, so one
// filter over G*S channels equals G filters over S, and shares the lattice traversal among
// them; the softmax runs within each group. Working on slots, not labels, keeps masked labels
// out of the filters entirely; padding slots hold Q = 0. An image without present labels gets
// Q = 0.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "common/macros.h"
#include "lattice/lattice.h"

namespace rrm {
namespace crf {

// The fixed inputs of one mean-field run.
struct MeanfieldProblem {
  const float* unary;
  const int32_t* slot_labels;
  int64_t batch;   // B
  int64_t points;  // P
  int64_t labels;  // L
  int64_t slots;   // S
  int64_t groups;  // G
  float gaussian_compat;
  float bilateral_compat;
  // float [2, L, L]: the label compatibility matrices mu_g and mu_b (see the header), which the
  // compat weights scale; null for Potts (mu = identity). At most kMaxCompatSlots slots.
  const float* compat_matrices = nullptr;
  // Layout of the Q the last update writes: [G, B, L, P] over labels (absent labels 0), or,
  // when set, [G, B, S, P] over slots, the layout of slot_labels.
  bool q_over_slots = false;
};

// Filtered channels per pixel: every slot of every group.
RRM_HOST_DEVICE inline int64_t slot_channels(const MeanfieldProblem& problem) { return problem.groups * problem.slots; }

// The CPU splats each image's pixels as `stripes` runs of consecutive pixels, each into vertex
// rows of its own (partial sums), which are then added in stripe order: the stripes update and
// splat concurrently, and the sums depend on the image size alone, not on the thread count.
// Stripes of at least kStripePixels pixels, at most kMaxStripes per image; each starts at a
// multiple of 4 pixels.
constexpr int64_t kStripePixels = 16384;
constexpr int64_t kMaxStripes = 2;

inline int64_t pixel_stripes(int64_t points) {
  const int64_t stripes = points / kStripePixels;
  return stripes < 1 ? 1 : (stripes > kMaxStripes ? kMaxStripes : stripes);
}

// The first pixel of stripe `stripe` of an image of `points` pixels, counted from the image's
// first; stripe `stripes` starts at `points`.
inline int64_t stripe_begin(int64_t points, int64_t stripes, int64_t stripe) {
  return stripe == stripes ? points : points * stripe / stripes / 4 * 4;
}

// The float buffers of one run, carved from one allocation (see workspace_floats). Each
// lattice has its own vertex buffers, so different images may be at different steps.
// K = G*S channels; T the partial splats per lattice (the CPU's stripes; 0 on CUDA).
struct MeanfieldWorkspace {
  float* gaussian_norm;       // [B*P]
  float* bilateral_norm;      // [B*P]
  float* unary_slots;         // [B*P rounded up to kUnaryBlock, K] the unary of each slot, in blocks
  float* q_slots;             // [B*P, K] Q of each slot (on the CPU, scratch of the norms)
  float* gaussian_vertex_a;   // [M_g, K]
  float* gaussian_vertex_b;   // [M_g, K]
  float* bilateral_vertex_a;  // [M_b, K]
  float* bilateral_vertex_b;  // [M_b, K]
  float* gaussian_partials;   // [T, M_g, K]
  float* bilateral_partials;  // [T, M_b, K]
};

// unary_slots keeps each block of kUnaryBlock consecutive pixels (by global index) channel by
// channel, so that the CPU update of a block reads a slot of all its pixels as one vector.
constexpr int64_t kUnaryBlock = 8;

RRM_HOST_DEVICE inline int64_t unary_index(int64_t pixel, int64_t channel, int64_t channels) {
  const int64_t block = pixel / kUnaryBlock;
  return (block * channels + channel) * kUnaryBlock + (pixel - block * kUnaryBlock);
}

// The pixels unary_slots holds room for: whole blocks.
inline int64_t unary_block_pixels(int64_t pixels) { return (pixels + kUnaryBlock - 1) / kUnaryBlock * kUnaryBlock; }

inline int64_t workspace_floats(int64_t pixels, int64_t channels, int64_t gaussian_vertices,
                                int64_t bilateral_vertices, int64_t partials) {
  return 2 * pixels + (unary_block_pixels(pixels) + pixels) * channels +
         (2 + partials) * (gaussian_vertices + bilateral_vertices) * channels;
}

inline MeanfieldWorkspace carve_workspace(float* base, int64_t pixels, int64_t channels, int64_t gaussian_vertices,
                                          int64_t bilateral_vertices, int64_t partials) {
  MeanfieldWorkspace ws;
  ws.gaussian_norm = base;
  ws.bilateral_norm = ws.gaussian_norm + pixels;
  ws.unary_slots = ws.bilateral_norm + pixels;
  ws.q_slots = ws.unary_slots + unary_block_pixels(pixels) * channels;
  ws.gaussian_vertex_a = ws.q_slots + pixels * channels;
  ws.gaussian_vertex_b = ws.gaussian_vertex_a + gaussian_vertices * channels;
  ws.bilateral_vertex_a = ws.gaussian_vertex_b + gaussian_vertices * channels;
  ws.bilateral_vertex_b = ws.bilateral_vertex_a + bilateral_vertices * channels;
  ws.gaussian_partials = ws.bilateral_vertex_b + bilateral_vertices * channels;
  ws.bilateral_partials = ws.gaussian_partials + partials * gaussian_vertices * channels;
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

// The update's float arithmetic is written once for a value type F: float (one pixel, every
// device) or, on the CPU, a GCC vector of floats holding one slot of several pixels (see
// crf_cpu.cpp). Each vector lane then performs exactly the float operations of the scalar,
// so both give the same bits. FloatBits names F's same-sized integer types.
template <typename F>
struct FloatBits {
  using Unsigned = uint32_t;
  using Signed = int32_t;
};

// `value` in every lane of T (T{} is zero). value - 0 is value for every value, so compilers
// drop the subtraction; value + 0 is not (-0 + 0 is +0) and costs an addition.
template <typename T, typename Scalar>
RRM_HOST_DEVICE RRM_INLINE T broadcast(Scalar value) {
  return value - T{};
}

// exp(x) for x <= 0 (including -inf) within 1 ulp of expf, Cephes' range reduction and
// polynomial, with exactly 0 below about -87.3 where expf turns subnormal. Written in plain
// float and integer operations (no calls, no float compares) so that CPU compilers vectorise
// it and the CPU and CUDA evaluate the same formula.
template <typename F>
RRM_HOST_DEVICE RRM_INLINE F exp_nonpositive(F x) {
  using U = typename FloatBits<F>::Unsigned;
  using I = typename FloatBits<F>::Signed;
  // Clamp to -100 through the bits: for x <= 0, larger magnitudes have larger unsigned patterns.
  const U minus_100 = broadcast<U>(0xC2C80000u);
  const U x_bits = bit_cast<U>(x);
  x = bit_cast<F>(x_bits > minus_100 ? minus_100 : x_bits);
  // Adding 1.5 * 2^23 rounds x * log2(e) to the nearest integer n and leaves n in the low bits.
  const F shifted = x * 1.44269504088896341f + 12582912.0f;
  const F n = shifted - 12582912.0f;
  F r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  F p = broadcast<F>(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const F y = p * (r * r) + r + 1.0f;
  const I biased_exponent = bit_cast<I>(shifted) - 0x4B400000 + 127;  // n + 127
  const I zero{};
  return y * bit_cast<F>((biased_exponent > zero ? biased_exponent : zero) << 23);
}

// Copies the unaries of the N pixels from `first` on (global indices b*P + p, in one image and,
// for N > 1, in one unary block) into their slots; padding slots get +inf, so their energy is
// -inf and their Q exactly 0.
template <int N = 1>
RRM_HOST_DEVICE inline void gather_unary_pixels(const MeanfieldProblem& problem, float* unary_slots, int64_t first) {
  const int64_t image = first / problem.points;
  const int64_t p = first - image * problem.points;
  const int32_t* labels = problem.slot_labels + image * problem.slots;
  const int64_t channels = slot_channels(problem);
  for (int64_t g = 0; g < problem.groups; ++g) {
    const float* unary = problem.unary + ((g * problem.batch + image) * problem.labels) * problem.points + p;
    for (int64_t s = 0; s < problem.slots; ++s) {
      float* out = unary_slots + unary_index(first, g * problem.slots + s, channels);
      for (int i = 0; i < N; ++i) out[i] = labels[s] >= 0 ? unary[labels[s] * problem.points + i] : INFINITY;
    }
  }
}

// What one update reads and writes. Before the first iteration the vertex pointers are null
// and Q = softmax(-U); q is null except on the last step.
struct MeanfieldStep {
  const float* gaussian_norm;
  const float* bilateral_norm;
  const float* unary_slots;
  float* q_slots;
  lattice::LatticeView gaussian;
  lattice::LatticeView bilateral;
  const float* gaussian_vertices;   // [M_g, K] the blurred splat of n_g * Q, or null
  const float* bilateral_vertices;  // [M_b, K] the blurred splat of n_b * Q, or null
  float gaussian_weight;            // compat times the lattice's slice scale (slice_scale)
  float bilateral_weight;
  float* q;
  // q_slots holds the rows of the pixels from this one on (the CPU keeps a chunk's rows only).
  int64_t q_first_pixel = 0;
};

// The Q row of pixel `pixel` (a global index b*P + p) in step.q_slots.
RRM_HOST_DEVICE inline float* q_row(const MeanfieldStep& step, int64_t pixel, int64_t channels) {
  return step.q_slots + (pixel - step.q_first_pixel) * channels;
}

// The step of the first update (Q = softmax(-U)), which writes q if it is not null.
inline MeanfieldStep initial_step(const MeanfieldProblem& problem, const MeanfieldWorkspace& ws,
                                  const lattice::LatticeView& gaussian, const lattice::LatticeView& bilateral,
                                  float* q) {
  return {ws.gaussian_norm,
          ws.bilateral_norm,
          ws.unary_slots,
          ws.q_slots,
          gaussian,
          bilateral,
          nullptr,
          nullptr,
          problem.gaussian_compat * lattice::slice_scale<float>(gaussian.d1 - 1),
          problem.bilateral_compat * lattice::slice_scale<float>(bilateral.d1 - 1),
          q};
}

// The barycentric sum of channel `channel` of the blurred vertex values `vertices` of lattice
// `lat` at pixel `pixel` (a global index b*P + p): the slice without its scale.
RRM_HOST_DEVICE RRM_INLINE float barycentric_sum(const lattice::LatticeView& lat, const float* vertices,
                                                 int64_t channels, int64_t pixel, int64_t channel) {
  float sum;
  // A scale of 1 leaves every product as it is (x * 1 is x), and compilers drop the multiplication.
  lattice::slice_sums<float, 1>(lat, pixel, vertices, channels, channel, 1.f, &sum);
  return sum;
}

// The slot count is a multiple of kSlotLanes. The softmax's maximum and sum run lane by lane,
// then across the lanes, an order every device follows and CPU compilers can vectorise.
constexpr int64_t kSlotLanes = 4;

// max(a, b) for numbers (fmaxf is a library call on the CPU unless NaNs are ruled out).
template <typename F>
RRM_HOST_DEVICE RRM_INLINE F larger(F a, F b) {
  return a > b ? a : b;
}

// The largest of values[0, count) in lane order. Starting below every finite value keeps an
// image without present labels free of NaN.
template <typename F>
RRM_HOST_DEVICE RRM_INLINE F lane_maximum(const F* values, int64_t count) {
  F lane[kSlotLanes];
  for (int k = 0; k < kSlotLanes; ++k) lane[k] = broadcast<F>(-3.402823466e38f);
  for (int64_t s = 0; s < count; s += kSlotLanes) {
    for (int k = 0; k < kSlotLanes; ++k) lane[k] = larger(values[s + k], lane[k]);
  }
  return larger(larger(lane[0], lane[1]), larger(lane[2], lane[3]));
}

// The sum of values[0, count) in lane order.
template <typename F>
RRM_HOST_DEVICE RRM_INLINE F lane_sum(const F* values, int64_t count) {
  F lane[kSlotLanes];
  for (int k = 0; k < kSlotLanes; ++k) lane[k] = F{};
  for (int64_t s = 0; s < count; s += kSlotLanes) {
    for (int k = 0; k < kSlotLanes; ++k) lane[k] += values[s + k];
  }
  return (lane[0] + lane[1]) + (lane[2] + lane[3]);
}

// The energy of one slot after filtering: -U + scale_g * sum_g + scale_b * sum_b, with each
// kernel's barycentric sum and pixel scale (kernel_scale).
template <typename F>
RRM_HOST_DEVICE RRM_INLINE F slot_energy(F unary, F gaussian_sum, F bilateral_sum, F gaussian_scale,
                                         F bilateral_scale) {
  F energy = -unary;
  energy = energy + gaussian_scale * gaussian_sum;
  energy = energy + bilateral_scale * bilateral_sum;
  return energy;
}

// What a kernel's barycentric sums at a pixel are multiplied by: (compat * slice scale) * norm.
template <typename F>
RRM_HOST_DEVICE RRM_INLINE F kernel_scale(float weight, F norm) {
  return weight * norm;
}

// Replaces the energies row[0, slots) of one group by its Q: the max-subtracted exponentials
// times the inverse of their sum. The loops run over all slots, padding included, so that they have no
// data-dependent bounds. S > 0 fixes the slot count at compile time (it must equal slots).
template <int S, typename F>
RRM_HOST_DEVICE RRM_INLINE void softmax_in_place(F* row, int64_t slots) {
  if (S > 0) slots = S;
  const F max_energy = lane_maximum(row, slots);
  for (int64_t s = 0; s < slots; ++s) row[s] = exp_nonpositive(row[s] - max_energy);
  // The maximum contributes exactly exp(0) = 1, so the sum is 1 or more whenever a label is
  // present; raising it to 1 only matters (giving Q = 0) when none is.
  // One division and a multiplication per slot instead of a division per slot (within an ulp of
  // pydensecrf's quotients).
  const F inverse_sum = 1.f / larger(lane_sum(row, slots), broadcast<F>(1.f));
  for (int64_t s = 0; s < slots; ++s) row[s] = row[s] * inverse_sum;
}

// Writes the Q of one group of pixel `pixel` (q_row over its slots) into the step's q. F is
// float, or on the CPU a vector holding a slot's Q at consecutive pixels of one image from
// `pixel` on, which goes to its row of q whole.
template <typename F = float>
RRM_HOST_DEVICE inline void write_q(const MeanfieldProblem& problem, float* q_out, int64_t pixel, int64_t group,
                                    const F* q_row) {
  const int64_t slots = problem.slots;
  const int64_t image = pixel / problem.points;
  const int64_t p = pixel - image * problem.points;
  if (problem.q_over_slots) {
    float* q = q_out + ((group * problem.batch + image) * slots) * problem.points + p;
    for (int64_t s = 0; s < slots; ++s) memcpy(q + s * problem.points, &q_row[s], sizeof(F));
  } else {
    const int32_t* labels = problem.slot_labels + image * slots;
    float* q = q_out + ((group * problem.batch + image) * problem.labels) * problem.points + p;
    const F zero{};
    int64_t s = 0;
    for (int64_t label = 0; label < problem.labels; ++label) {
      const bool is_present = s < slots && labels[s] == label;
      memcpy(q + label * problem.points, is_present ? &q_row[s] : &zero, sizeof(F));
      s += is_present ? 1 : 0;
    }
  }
}

// The slots the matrix compatibility keeps each kernel's filtered values of a pixel for.
constexpr int64_t kMaxCompatSlots = 64;

// The energies row[0, slots) of group `group` of pixel `pixel` with the compatibility matrices:
// each kernel's filtered values of every slot first, then per slot -U plus the two
// matrix-vector products (padding slots contribute nothing and get -U = -inf).
RRM_HOST_DEVICE inline void matrix_compat_energies(const MeanfieldProblem& problem, const MeanfieldStep& step,
                                                   int64_t pixel, int64_t first_channel, int64_t slots, float* row) {
  const int64_t channels = slot_channels(problem);
  const int64_t labels = problem.labels;
  const int32_t* slot_labels = problem.slot_labels + (pixel / problem.points) * problem.slots;
  const float* gaussian_mu = problem.compat_matrices;
  const float* bilateral_mu = problem.compat_matrices + labels * labels;
  const float gaussian_scale = kernel_scale(step.gaussian_weight, step.gaussian_norm[pixel]);
  const float bilateral_scale = kernel_scale(step.bilateral_weight, step.bilateral_norm[pixel]);
  float gaussian[kMaxCompatSlots];
  float bilateral[kMaxCompatSlots];
  for (int64_t t = 0; t < slots; ++t) {
    const int64_t channel = first_channel + t;
    gaussian[t] = gaussian_scale * barycentric_sum(step.gaussian, step.gaussian_vertices, channels, pixel, channel);
    bilateral[t] = bilateral_scale * barycentric_sum(step.bilateral, step.bilateral_vertices, channels, pixel, channel);
  }
  for (int64_t s = 0; s < slots; ++s) {
    float energy = -step.unary_slots[unary_index(pixel, first_channel + s, channels)];
    const int64_t label = slot_labels[s];
    if (label >= 0) {
      float gaussian_sum = 0.f;
      float bilateral_sum = 0.f;
      for (int64_t t = 0; t < slots && slot_labels[t] >= 0; ++t) {
        gaussian_sum = gaussian_sum + gaussian_mu[label * labels + slot_labels[t]] * gaussian[t];
        bilateral_sum = bilateral_sum + bilateral_mu[label * labels + slot_labels[t]] * bilateral[t];
      }
      energy = energy + gaussian_sum;
      energy = energy + bilateral_sum;
    }
    row[s] = energy;
  }
}

// One mean-field update of group `group` of pixel `pixel` (a global index b*P + p), in place
// in the pixel's Q row, which holds the energies first. S as in softmax_in_place.
template <int S = 0>
RRM_HOST_DEVICE RRM_INLINE void update_group(const MeanfieldProblem& problem, const MeanfieldStep& step, int64_t pixel,
                                             int64_t group) {
  // Scalars are read into locals first: the row's float stores could otherwise alias the
  // problem's float members and force a reload after every store.
  const int64_t slots = S > 0 ? S : problem.slots;
  const int64_t channels = slot_channels(problem);
  const int64_t first_channel = group * slots;
  const float* RRM_RESTRICT unary = step.unary_slots;
  float* RRM_RESTRICT row = q_row(step, pixel, channels) + first_channel;
  if (step.gaussian_vertices == nullptr) {
    for (int64_t s = 0; s < slots; ++s) row[s] = -unary[unary_index(pixel, first_channel + s, channels)];
  } else if (problem.compat_matrices != nullptr) {
    matrix_compat_energies(problem, step, pixel, first_channel, slots, row);
  } else {
    const float gaussian_scale = kernel_scale(step.gaussian_weight, step.gaussian_norm[pixel]);
    const float bilateral_scale = kernel_scale(step.bilateral_weight, step.bilateral_norm[pixel]);
    for (int64_t s = 0; s < slots; ++s) {
      const int64_t channel = first_channel + s;
      const float gaussian = barycentric_sum(step.gaussian, step.gaussian_vertices, channels, pixel, channel);
      const float bilateral = barycentric_sum(step.bilateral, step.bilateral_vertices, channels, pixel, channel);
      row[s] = slot_energy(unary[unary_index(pixel, channel, channels)], gaussian, bilateral, gaussian_scale,
                           bilateral_scale);
    }
  }
  softmax_in_place<S>(row, slots);
  if (step.q != nullptr) write_q(problem, step.q, pixel, group, row);
}

// One mean-field update of every group of pixel `pixel`.
template <int S = 0>
RRM_HOST_DEVICE RRM_INLINE void update_pixel(const MeanfieldProblem& problem, const MeanfieldStep& step,
                                             int64_t pixel) {
  for (int64_t group = 0; group < problem.groups; ++group) update_group<S>(problem, step, pixel, group);
}

}  // namespace crf
}  // namespace rrm
