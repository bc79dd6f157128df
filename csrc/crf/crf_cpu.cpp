// CPU launcher of the dense CRF op family: at::parallel_for over the bodies of crf.h (over the
// pixels of one image, or over the images of a batch), with the lattice family's
// allocation-free splat and blur between the updates.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>

#include "common/buffers.h"
#include "common/dispatch.h"
#include "crf/crf_ops.h"

namespace rrm {
namespace crf {

// Pixels the CPU updates together, one per lane of a GCC vector. One pixel's update is a chain
// of dependent operations (the maximum, the exponential's polynomial, the sum, the division);
// a vector of pixels runs that chain once for all of them. Four lanes match the slot blocks
// of kSlotLanes, so a block of four pixels' rows is a 4 x 4 transpose away.
constexpr int kPixelLanes = 4;
static_assert(kPixelLanes == kSlotLanes, "the row transposes assume square blocks");
typedef float PixelFloats __attribute__((vector_size(4 * kPixelLanes)));
typedef uint32_t PixelUnsigned __attribute__((vector_size(4 * kPixelLanes)));
typedef int32_t PixelSigned __attribute__((vector_size(4 * kPixelLanes)));

template <>
struct FloatBits<PixelFloats> {
  using Unsigned = PixelUnsigned;
  using Signed = PixelSigned;
};

namespace {

constexpr int64_t kPixelGrain = 256;

// Rows of 4 values of 4 pixels <-> 4 vectors of one value of each pixel.
RRM_INLINE void transpose4(PixelFloats (&v)[4]) {
  const PixelFloats t0 = __builtin_shufflevector(v[0], v[1], 0, 4, 1, 5);
  const PixelFloats t1 = __builtin_shufflevector(v[0], v[1], 2, 6, 3, 7);
  const PixelFloats t2 = __builtin_shufflevector(v[2], v[3], 0, 4, 1, 5);
  const PixelFloats t3 = __builtin_shufflevector(v[2], v[3], 2, 6, 3, 7);
  v[0] = __builtin_shufflevector(t0, t2, 0, 1, 4, 5);
  v[1] = __builtin_shufflevector(t0, t2, 2, 3, 6, 7);
  v[2] = __builtin_shufflevector(t1, t3, 0, 1, 4, 5);
  v[3] = __builtin_shufflevector(t1, t3, 2, 3, 6, 7);
}

// slots[s] = the slot-s values of the 4 pixel rows base + j * stride, j = 0..3.
template <int S>
RRM_INLINE void load_slots(const float* base, int64_t stride, PixelFloats (&slots)[S]) {
  for (int s = 0; s < S; s += kSlotLanes) {
    PixelFloats block[4];
    for (int j = 0; j < 4; ++j) memcpy(&block[j], base + j * stride + s, sizeof(PixelFloats));
    transpose4(block);
    for (int k = 0; k < 4; ++k) slots[s + k] = block[k];
  }
}

// The inverse of load_slots: the pixel rows base + j * stride from the slot vectors.
template <int S>
RRM_INLINE void store_slots(const PixelFloats (&slots)[S], int64_t stride, float* base) {
  for (int s = 0; s < S; s += kSlotLanes) {
    PixelFloats block[4] = {slots[s], slots[s + 1], slots[s + 2], slots[s + 3]};
    transpose4(block);
    for (int j = 0; j < 4; ++j) memcpy(base + j * stride + s, &block[j], sizeof(PixelFloats));
  }
}

// The slices of the S channels from first_channel on of the kPixelLanes pixels from first_pixel
// on, as slot vectors. Each pixel's channels are summed as vectors of kSlotLanes channels with
// sliced_channel's float operations (GCC left the scalar body's channel sums unvectorised),
// then transposed into slots. D1 > 0 is the lattice's entries per pixel (d + 1), fixed at
// compile time.
template <int S, int D1>
RRM_INLINE void slice_lanes(const lattice::LatticeView& lat, const float* vertices, int64_t channels, float alpha,
                            int64_t first_pixel, int64_t first_channel, PixelFloats (&slots)[S]) {
  const int d1 = D1 > 0 ? D1 : lat.d1;
  constexpr int kBlocks = S / kSlotLanes;
  const PixelFloats alphas = broadcast<PixelFloats>(alpha);
  PixelFloats sums[kPixelLanes][kBlocks];
  for (int j = 0; j < kPixelLanes; ++j) {
    for (int b = 0; b < kBlocks; ++b) sums[j][b] = PixelFloats{};
    for (int r = 0; r < d1; ++r) {
      const int64_t entry = (first_pixel + j) * d1 + r;
      const PixelFloats w = broadcast<PixelFloats>(lat.weights[entry]);
      const float* in = vertices + static_cast<int64_t>(lat.offsets[entry]) * channels + first_channel;
      for (int b = 0; b < kBlocks; ++b) {
        PixelFloats value;
        memcpy(&value, in + b * kSlotLanes, sizeof(PixelFloats));
        sums[j][b] += w * value * alphas;
      }
    }
  }
  for (int b = 0; b < kBlocks; ++b) {
    PixelFloats block[4] = {sums[0][b], sums[1][b], sums[2][b], sums[3][b]};
    transpose4(block);
    for (int k = 0; k < 4; ++k) slots[b * kSlotLanes + k] = block[k];
  }
}

// update_group<S> for the kPixelLanes pixels from first_pixel on, with the same float
// operations lane by lane, so with the same bits. GaussianD1 and BilateralD1 as slice_lanes' D1.
template <int S, int GaussianD1, int BilateralD1>
RRM_INLINE void update_group_lanes(const MeanfieldProblem& problem, const MeanfieldStep& step, int64_t first_pixel,
                                   int64_t group) {
  const int64_t channels = slot_channels(problem);
  const int64_t first = first_pixel * channels + group * S;
  PixelFloats row[S];
  load_slots(step.unary_slots + first, channels, row);
  if (step.gaussian_vertices != nullptr) {
    PixelFloats gaussian_norm, bilateral_norm;
    memcpy(&gaussian_norm, step.gaussian_norm + first_pixel, sizeof(PixelFloats));
    memcpy(&bilateral_norm, step.bilateral_norm + first_pixel, sizeof(PixelFloats));
    PixelFloats gaussian[S], bilateral[S];
    slice_lanes<S, GaussianD1>(step.gaussian, step.gaussian_vertices, channels, step.gaussian_alpha, first_pixel,
                               group * S, gaussian);
    slice_lanes<S, BilateralD1>(step.bilateral, step.bilateral_vertices, channels, step.bilateral_alpha, first_pixel,
                                group * S, bilateral);
    for (int s = 0; s < S; ++s) {
      row[s] = slot_energy(row[s], gaussian[s], bilateral[s], gaussian_norm, bilateral_norm, problem.gaussian_compat,
                           problem.bilateral_compat);
    }
  } else {
    for (int s = 0; s < S; ++s) row[s] = -row[s];
  }
  softmax_in_place<S>(row, S);
  if (step.q != nullptr) {
    for (int j = 0; j < kPixelLanes; ++j) {
      float q_row[S];
      for (int s = 0; s < S; ++s) q_row[s] = row[s][j];
      write_q(problem, step.q, first_pixel + j, group, q_row);
    }
  }
  store_slots(row, channels, step.q_slots + first);
}

// The updates of pixels [begin, end): whole vectors of pixels, then one by one. The lattices of
// dense_crf (d = 2 and 5) get constant entry counts, so that the slices' entry loops unroll.
template <int S>
void update_pixels(const MeanfieldProblem& problem, const MeanfieldStep& step, int64_t begin, int64_t end) {
  int64_t i = begin;
  if constexpr (S > 0) {
    const auto vectors = [&](auto gaussian_d1, auto bilateral_d1) {
      for (; i + kPixelLanes <= end; i += kPixelLanes) {
        for (int64_t group = 0; group < problem.groups; ++group) {
          update_group_lanes<S, decltype(gaussian_d1)::value, decltype(bilateral_d1)::value>(problem, step, i, group);
        }
      }
    };
    if (step.gaussian.d1 == 3 && step.bilateral.d1 == 6) {
      vectors(std::integral_constant<int, 3>(), std::integral_constant<int, 6>());
    } else {
      vectors(std::integral_constant<int, 0>(), std::integral_constant<int, 0>());
    }
  }
  for (; i < end; ++i) update_pixel<S>(problem, step, i);
}

// Runs body(begin, end) over consecutive ranges of the span's pixels, split among the threads.
template <typename Body>
void for_pixel_ranges(const lattice::ItemSpan& span, const Body& body) {
  at::parallel_for(span.point_begin, span.point_end, kPixelGrain, body);
}

template <int S>
void update_all_pixels(const MeanfieldProblem& problem, const MeanfieldStep& step, const lattice::ItemSpan& span) {
  for_pixel_ranges(span, [&](int64_t begin, int64_t end) { update_pixels<S>(problem, step, begin, end); });
}

// Writes the symmetric normalisation factors of one lattice into norm, using scratch [pixels]
// and the lattice's vertex buffers.
void norms_cpu(const lattice::LatticeView& lat, const lattice::ItemSpan& span, float* vertex_a, float* vertex_b,
               float* scratch, float* norm) {
  std::fill(scratch + span.point_begin, scratch + span.point_end, 1.f);
  lattice::filter_cpu_into(lat, span, scratch, 1, false, vertex_a, vertex_b, scratch);
  for_pixel_ranges(span, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) norm[i] = symmetric_norm(scratch[i]);
  });
}

// The mean field of the images [image_begin, image_end) once the norms are known. Images share
// no pixels or vertices, so different images may run concurrently. S > 0 is the slot count.
template <int S>
void meanfield_cpu(const MeanfieldProblem& problem, const lattice::LatticeView& gaussian,
                   const lattice::LatticeView& bilateral, int64_t n_iter, const MeanfieldWorkspace& ws, float* q,
                   int64_t image_begin, int64_t image_end) {
  const lattice::ItemSpan gaussian_span = lattice::item_span(gaussian, problem.points, image_begin, image_end);
  const lattice::ItemSpan bilateral_span = lattice::item_span(bilateral, problem.points, image_begin, image_end);
  const lattice::ItemSpan& pixels = gaussian_span;
  const int64_t channels = slot_channels(problem);

  MeanfieldStep step = initial_step(ws, gaussian, bilateral, n_iter == 0 ? q : nullptr);
  update_all_pixels<S>(problem, step, pixels);
  for (int64_t iteration = 0; iteration < n_iter; ++iteration) {
    step.gaussian_vertices = lattice::splat_blur_cpu_into(gaussian, gaussian_span, ws.q_slots, ws.gaussian_norm,
                                                          channels, ws.gaussian_vertex_a, ws.gaussian_vertex_b);
    step.bilateral_vertices = lattice::splat_blur_cpu_into(bilateral, bilateral_span, ws.q_slots, ws.bilateral_norm,
                                                           channels, ws.bilateral_vertex_a, ws.bilateral_vertex_b);
    step.q = iteration == n_iter - 1 ? q : nullptr;
    update_all_pixels<S>(problem, step, pixels);
  }
}

}  // namespace

void meanfield_from_slots_cpu(const MeanfieldProblem& problem, const lattice::LatticeView& gaussian,
                              const lattice::LatticeView& bilateral, int64_t n_iter, const MeanfieldWorkspace& ws,
                              float* q) {
  const int64_t images = problem.batch;
  // The norms filter one channel, laid out unlike the K-channel arrays that reuse the same
  // buffers, so they are computed for the whole batch before any image moves on.
  norms_cpu(gaussian, lattice::item_span(gaussian, problem.points, 0, images), ws.gaussian_vertex_a,
            ws.gaussian_vertex_b, ws.q_slots, ws.gaussian_norm);
  norms_cpu(bilateral, lattice::item_span(bilateral, problem.points, 0, images), ws.bilateral_vertex_a,
            ws.bilateral_vertex_b, ws.q_slots, ws.bilateral_norm);
  // The update unrolls completely at the slot counts of up to 24 present labels.
  with_constant<4, 8, 12, 16, 20, 24>(problem.slots, [&](auto slots) {
    constexpr int S = decltype(slots)::value;
    if (images == 1 || at::get_num_threads() == 1) {
      meanfield_cpu<S>(problem, gaussian, bilateral, n_iter, ws, q, 0, images);
    } else {
      // Whole images per thread: one parallel region instead of about fifteen per iteration,
      // each a barrier. Inside it, the steps' parallel_for calls run inline.
      at::parallel_for(0, images, 1, [&](int64_t begin, int64_t end) {
        for (int64_t image = begin; image < end; ++image) {
          meanfield_cpu<S>(problem, gaussian, bilateral, n_iter, ws, q, image, image + 1);
        }
      });
    }
  });
}

at::Tensor dense_crf_meanfield_cpu(const at::Tensor& unary, const std::optional<at::Tensor>& label_mask,
                                   const at::Tensor& gaussian_offsets, const at::Tensor& gaussian_weights,
                                   const at::Tensor& gaussian_neighbours, const at::Tensor& gaussian_splat_ptr,
                                   const at::Tensor& gaussian_splat_entries, const at::Tensor& gaussian_splat_weights,
                                   const at::Tensor& bilateral_offsets, const at::Tensor& bilateral_weights,
                                   const at::Tensor& bilateral_neighbours, const at::Tensor& bilateral_splat_ptr,
                                   const at::Tensor& bilateral_splat_entries, const at::Tensor& bilateral_splat_weights,
                                   double gaussian_compat, double bilateral_compat, int64_t n_iter) {
  const MeanfieldInputs inputs = checked_meanfield_inputs(
      unary, label_mask,
      {gaussian_offsets, gaussian_weights, gaussian_neighbours, gaussian_splat_ptr, gaussian_splat_entries,
       gaussian_splat_weights},
      {bilateral_offsets, bilateral_weights, bilateral_neighbours, bilateral_splat_ptr, bilateral_splat_entries,
       bilateral_splat_weights},
      gaussian_compat, bilateral_compat, n_iter);
  at::Tensor q = empty_filled_buffer(inputs.unary.sizes(), inputs.unary.options());
  if (q.numel() == 0) return q;
  const MeanfieldProblem problem = make_problem(inputs, gaussian_compat, bilateral_compat);
  const lattice::LatticeView gaussian = lattice::make_view(inputs.gaussian);
  const lattice::LatticeView bilateral = lattice::make_view(inputs.bilateral);
  at::Tensor workspace = allocate_workspace(problem, gaussian, bilateral, q.options());
  const MeanfieldWorkspace ws = carve_workspace(workspace, problem, gaussian, bilateral);
  at::parallel_for(0, gaussian.num_points, kPixelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) gather_unary_pixel(problem, ws.unary_slots, i);
  });
  meanfield_from_slots_cpu(problem, gaussian, bilateral, n_iter, ws, q.data_ptr<float>());
  return q;
}

TORCH_LIBRARY_IMPL(rrm_ops, CPU, m) {
  m.impl("dense_crf_meanfield", &dense_crf_meanfield_cpu);
  m.impl("dense_crf", &dense_crf);
}

}  // namespace crf
}  // namespace rrm
