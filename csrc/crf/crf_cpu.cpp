// CPU launcher of the dense CRF op family: at::parallel_for over the bodies of crf.h, over the
// stripes of an image's pixels (see crf.h), or over the images of a batch. Each stripe updates
// its pixels and scatters their new Q into partial sums of its own; the lattice family adds
// them and blurs, allocation-free, between the updates.
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "common/buffers.h"
#include "common/dispatch.h"
#include "common/library.h"
#include "crf/crf_ops.h"

namespace rrm {
namespace crf {

// Pixels the CPU updates together, one per lane of a GCC vector. One pixel's update is a chain
// of dependent operations (the maximum, the exponential's polynomial, the sum, the division);
// a vector of pixels runs that chain once for all of them. Eight lanes fill an AVX register (an
// x86-64-v2 build uses two SSE registers, with the same bits).
constexpr int kPixelLanes = 8;
typedef float PixelFloats __attribute__((vector_size(4 * kPixelLanes)));
typedef uint32_t PixelUnsigned __attribute__((vector_size(4 * kPixelLanes)));
typedef int32_t PixelSigned __attribute__((vector_size(4 * kPixelLanes)));
// kSlotLanes consecutive values of one row (a slot count is a multiple of kSlotLanes).
typedef float QuadFloats __attribute__((vector_size(4 * kSlotLanes)));
static_assert(kSlotLanes == 4 && kPixelLanes == 8, "the transposes assume 8 pixels and quads");
static_assert(kPixelLanes == kUnaryBlock, "a vector of pixels reads one block of slot unaries");

template <>
struct FloatBits<PixelFloats> {
  using Unsigned = PixelUnsigned;
  using Signed = PixelSigned;
};

namespace {

constexpr int64_t kPixelGrain = 256;

// A stripe updates and splats its pixels in chunks of this many (by global index, a multiple of
// the vectors), whose Q rows only the splat reads: they live in a small buffer of the thread's,
// still in the L1 cache when the splat reads them, and never go to memory.
constexpr int64_t kChunkPixels = 256;

// The rows of 8 pixels are cut into blocks of 8 values where the slot count allows, else of 4;
// a block of the 8 rows is a transpose away from one slot vector per value of the block.
template <int S>
using RowBlock = std::conditional_t<S % 8 == 0, PixelFloats, QuadFloats>;

// Rows of 4 values of 4 pixels <-> 4 vectors of one value of each pixel (its own inverse).
RRM_INLINE void transpose4(QuadFloats (&v)[4]) {
  const QuadFloats t0 = __builtin_shufflevector(v[0], v[1], 0, 4, 1, 5);
  const QuadFloats t1 = __builtin_shufflevector(v[0], v[1], 2, 6, 3, 7);
  const QuadFloats t2 = __builtin_shufflevector(v[2], v[3], 0, 4, 1, 5);
  const QuadFloats t3 = __builtin_shufflevector(v[2], v[3], 2, 6, 3, 7);
  v[0] = __builtin_shufflevector(t0, t2, 0, 1, 4, 5);
  v[1] = __builtin_shufflevector(t0, t2, 2, 3, 6, 7);
  v[2] = __builtin_shufflevector(t1, t3, 0, 1, 4, 5);
  v[3] = __builtin_shufflevector(t1, t3, 2, 3, 6, 7);
}

// Rows of 8 values of 8 pixels <-> 8 vectors of one value of each pixel (its own inverse):
// interleave pairs of rows, then pairs of pairs, then swap the 128-bit halves.
RRM_INLINE void transpose8(PixelFloats (&v)[8]) {
  PixelFloats t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shufflevector(v[i], v[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = __builtin_shufflevector(v[i], v[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = __builtin_shufflevector(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
    u[i + 1] = __builtin_shufflevector(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    u[i + 2] = __builtin_shufflevector(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
    u[i + 3] = __builtin_shufflevector(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  for (int i = 0; i < 4; ++i) {
    v[i] = __builtin_shufflevector(u[i], u[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    v[i + 4] = __builtin_shufflevector(u[i], u[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

// slots[k] = value k of the 8 pixel rows' blocks rows[j] (k below the block's width).
RRM_INLINE void rows_to_slots(const PixelFloats (&rows)[kPixelLanes], PixelFloats* slots) {
  PixelFloats v[8];
  for (int j = 0; j < 8; ++j) v[j] = rows[j];
  transpose8(v);
  for (int k = 0; k < 8; ++k) slots[k] = v[k];
}

RRM_INLINE void rows_to_slots(const QuadFloats (&rows)[kPixelLanes], PixelFloats* slots) {
  QuadFloats low[4] = {rows[0], rows[1], rows[2], rows[3]};
  QuadFloats high[4] = {rows[4], rows[5], rows[6], rows[7]};
  transpose4(low);
  transpose4(high);
  for (int k = 0; k < 4; ++k) slots[k] = __builtin_shufflevector(low[k], high[k], 0, 1, 2, 3, 4, 5, 6, 7);
}

// The inverse of rows_to_slots.
RRM_INLINE void slots_to_rows(const PixelFloats* slots, PixelFloats (&rows)[kPixelLanes]) {
  for (int k = 0; k < 8; ++k) rows[k] = slots[k];
  transpose8(rows);
}

RRM_INLINE void slots_to_rows(const PixelFloats* slots, QuadFloats (&rows)[kPixelLanes]) {
  QuadFloats low[4], high[4];
  for (int k = 0; k < 4; ++k) {
    low[k] = __builtin_shufflevector(slots[k], slots[k], 0, 1, 2, 3);
    high[k] = __builtin_shufflevector(slots[k], slots[k], 4, 5, 6, 7);
  }
  transpose4(low);
  transpose4(high);
  for (int j = 0; j < 4; ++j) {
    rows[j] = low[j];
    rows[j + 4] = high[j];
  }
}

// The kPixelLanes pixel rows base + j * stride from the slot vectors (slots[s]: slot s of every pixel).
template <int S>
RRM_INLINE void store_slots(const PixelFloats (&slots)[S], int64_t stride, float* base) {
  using Block = RowBlock<S>;
  for (int s = 0; s < S; s += sizeof(Block) / sizeof(float)) {
    Block rows[kPixelLanes];
    slots_to_rows(slots + s, rows);
    for (int j = 0; j < kPixelLanes; ++j) memcpy(base + j * stride + s, &rows[j], sizeof(Block));
  }
}

// The slices of the S channels from first_channel on of the kPixelLanes pixels from first_pixel
// on, as slot vectors: each pixel's channels summed block by block as vectors with
// barycentric_sum's float operations (GCC left the scalar body's channel sums unvectorised),
// then transposed into slots. A pixel's entries are the outer loop, so each vertex row's address
// and weight are loaded once for all its blocks. D1 > 0 is the lattice's entries per pixel
// (d + 1), fixed at compile time.
template <int S, int D1>
RRM_INLINE void slice_lanes(const lattice::LatticeView& lat, const float* vertices, int64_t channels,
                            int64_t first_pixel, int64_t first_channel, PixelFloats (&slots)[S]) {
  using Block = RowBlock<S>;
  constexpr int W = sizeof(Block) / sizeof(float);
  constexpr int kBlocks = S / W;
  const int d1 = D1 > 0 ? D1 : lat.d1;
  Block sums[kBlocks][kPixelLanes];
  for (int j = 0; j < kPixelLanes; ++j) {
    Block pixel_sums[kBlocks];
    for (int b = 0; b < kBlocks; ++b) pixel_sums[b] = Block{};
    for (int r = 0; r < d1; ++r) {
      const int64_t entry = (first_pixel + j) * d1 + r;
      const Block w = broadcast<Block>(lat.weights[entry]);
      const float* row = vertices + static_cast<int64_t>(lat.offsets[entry]) * channels + first_channel;
      for (int b = 0; b < kBlocks; ++b) {
        Block value;
        memcpy(&value, row + b * W, sizeof(Block));
        pixel_sums[b] += w * value;
      }
    }
    for (int b = 0; b < kBlocks; ++b) sums[b][j] = pixel_sums[b];
  }
  for (int b = 0; b < kBlocks; ++b) rows_to_slots(sums[b], slots + b * W);
}

// update_group<S> for the kPixelLanes pixels from first_pixel on, with the same float
// operations lane by lane, so with the same bits. GaussianD1 and BilateralD1 as slice_lanes' D1.
template <int S, int GaussianD1, int BilateralD1>
RRM_INLINE void update_group_lanes(const MeanfieldProblem& problem, const MeanfieldStep& step, int64_t first_pixel,
                                   int64_t group) {
  const int64_t channels = slot_channels(problem);
  // Slot s of the pixels' unary block; read where it is used, not copied first.
  const float* unary = step.unary_slots + unary_index(first_pixel, group * S, channels);
  const auto unary_slot = [&](int s) {
    PixelFloats value;
    memcpy(&value, unary + s * kUnaryBlock, sizeof(PixelFloats));
    return value;
  };
  PixelFloats row[S];
  if (step.gaussian_vertices != nullptr) {
    PixelFloats gaussian_norm, bilateral_norm;
    memcpy(&gaussian_norm, step.gaussian_norm + first_pixel, sizeof(PixelFloats));
    memcpy(&bilateral_norm, step.bilateral_norm + first_pixel, sizeof(PixelFloats));
    const PixelFloats gaussian_scale = kernel_scale(step.gaussian_weight, gaussian_norm);
    const PixelFloats bilateral_scale = kernel_scale(step.bilateral_weight, bilateral_norm);
    PixelFloats gaussian[S], bilateral[S];
    slice_lanes<S, GaussianD1>(step.gaussian, step.gaussian_vertices, channels, first_pixel, group * S, gaussian);
    slice_lanes<S, BilateralD1>(step.bilateral, step.bilateral_vertices, channels, first_pixel, group * S,
                                bilateral);
    for (int s = 0; s < S; ++s) {
      row[s] = slot_energy(unary_slot(s), gaussian[s], bilateral[s], gaussian_scale, bilateral_scale);
    }
  } else {
    for (int s = 0; s < S; ++s) row[s] = -unary_slot(s);
  }
  softmax_in_place<S>(row, S);
  if (step.q != nullptr) write_q(problem, step.q, first_pixel, group, row);
  store_slots(row, channels, q_row(step, first_pixel, channels) + group * S);
}

// The unaries of the pixels of unary block `block`: all at once when they are in one image.
void gather_unary_block(const MeanfieldProblem& problem, float* unary_slots, int64_t block) {
  const int64_t first = block * kUnaryBlock;
  const int64_t end = std::min(first + kUnaryBlock, problem.batch * problem.points);
  if (end - first == kUnaryBlock && (end - 1) / problem.points == first / problem.points) {
    gather_unary_pixels<kUnaryBlock>(problem, unary_slots, first);
  } else {
    for (int64_t pixel = first; pixel < end; ++pixel) gather_unary_pixels(problem, unary_slots, pixel);
  }
}

// Where the updates of one stripe splat their new Q: the stripe's partial sums of each lattice
// (see crf.h), or nowhere (null) on the last update.
struct StripeSplat {
  float* gaussian;
  float* bilateral;
};

// Adds w_e * (scale * row[c]) to the partial-sum rows of the D1 vertices of pixel `pixel` in one
// lattice: the products of splat_vertex, added in pixel order as it sums them. K > 0 fixes the
// channel count, which lets the row be scaled once and the channel loops compile to whole
// vectors; D1 > 0 fixes the entries per pixel.
template <int K, int D1>
RRM_INLINE void scatter_pixel(const lattice::LatticeView& lat, int64_t pixel, const float* RRM_RESTRICT row,
                              float scale, int64_t channels, float* RRM_RESTRICT partial) {
  const int d1 = D1 > 0 ? D1 : lat.d1;
  if constexpr (K > 0) {
    float scaled[K];
    for (int c = 0; c < K; ++c) scaled[c] = scale * row[c];
    for (int r = 0; r < d1; ++r) {
      const int64_t entry = pixel * d1 + r;
      const float w = lat.weights[entry];
      float* RRM_RESTRICT out = partial + static_cast<int64_t>(lat.offsets[entry]) * K;
      RRM_SIMD
      for (int c = 0; c < K; ++c) out[c] = out[c] + w * scaled[c];
    }
  } else {
    for (int r = 0; r < d1; ++r) {
      const int64_t entry = pixel * d1 + r;
      const float w = lat.weights[entry];
      float* RRM_RESTRICT out = partial + static_cast<int64_t>(lat.offsets[entry]) * channels;
      RRM_SIMD
      for (int64_t c = 0; c < channels; ++c) out[c] = out[c] + w * (scale * row[c]);
    }
  }
}

// Splats the new Q of pixels [begin, end), scaled by each lattice's norms, into the stripe's
// partial sums. K and the D1s as in scatter_pixel.
template <int K, int GaussianD1, int BilateralD1>
void splat_pixels(const MeanfieldStep& step, int64_t begin, int64_t end, int64_t channels, const StripeSplat& splat) {
  for (int64_t pixel = begin; pixel < end; ++pixel) {
    const float* row = q_row(step, pixel, channels);
    scatter_pixel<K, GaussianD1>(step.gaussian, pixel, row, step.gaussian_norm[pixel], channels, splat.gaussian);
    scatter_pixel<K, BilateralD1>(step.bilateral, pixel, row, step.bilateral_norm[pixel], channels, splat.bilateral);
  }
}

// The updates of pixels [begin, end) of one stripe (whole vectors of pixels, then one by one),
// then the splat of their new Q. Two loops rather than one: each stays small enough for the
// compiler to keep its values in registers, and the pixels' Q rows are still in cache for the
// splat. The lattices of dense_crf (d = 2 and 5) get constant entry counts, so that the
// slices' and splats' entry loops unroll.
template <int S>
void update_pixels(const MeanfieldProblem& problem_in, const MeanfieldStep& step_in, int64_t begin, int64_t end,
                   const StripeSplat& splat) {
  // Local copies: the vector stores may alias any memory the arguments point to, which would
  // force every pointer and scale to be reloaded after each store.
  const MeanfieldProblem problem = problem_in;
  const MeanfieldStep step = step_in;
  const int64_t channels = slot_channels(problem);
  const auto run = [&](auto gaussian_d1, auto bilateral_d1) {
    constexpr int GaussianD1 = decltype(gaussian_d1)::value;
    constexpr int BilateralD1 = decltype(bilateral_d1)::value;
    int64_t i = begin;
    // The compatibility matrices run the device-generic body pixel by pixel.
    if constexpr (S > 0) if (problem.compat_matrices == nullptr) {
      // Vectors of pixels start where unary_slots' blocks do.
      for (; i % kUnaryBlock != 0 && i < end; ++i) update_pixel<S>(problem, step, i);
      for (; i + kPixelLanes <= end; i += kPixelLanes) {
        for (int64_t group = 0; group < problem.groups; ++group) {
          update_group_lanes<S, GaussianD1, BilateralD1>(problem, step, i, group);
        }
      }
    }
    for (; i < end; ++i) update_pixel<S>(problem, step, i);
    if (splat.gaussian == nullptr) return;
    // The slot counts of up to 24 labels, and twice those for mining's two groups.
    with_constant<4, 8, 12, 16, 20, 24, 32, 40, 48>(channels, [&](auto k) {
      splat_pixels<decltype(k)::value, GaussianD1, BilateralD1>(step, begin, end, channels, splat);
    });
  };
  if (step.gaussian.d1 == 3 && step.bilateral.d1 == 6) {
    run(std::integral_constant<int, 3>(), std::integral_constant<int, 6>());
  } else {
    run(std::integral_constant<int, 0>(), std::integral_constant<int, 0>());
  }
}

// Runs body(begin, end) over consecutive ranges of the span's pixels, split among the threads.
template <typename Body>
void for_pixel_ranges(const lattice::ItemSpan& span, const Body& body) {
  at::parallel_for(span.point_begin, span.point_end, kPixelGrain, body);
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

// One lattice's side of a mean field over whole images: the vertices each stripe splats into,
// and the sum and blur of the stripes' partial sums (see crf.h).
class StripedSplat {
 public:
  StripedSplat(const lattice::LatticeView& lat, int64_t points, int64_t stripes, int64_t image_begin,
               int64_t image_end, int64_t channels, float* partials)
      : lat_(lat),
        points_(points),
        stripes_(stripes),
        image_begin_(image_begin),
        channels_(channels),
        partials_(partials),
        ranges_((image_end - image_begin) * stripes) {
    at::parallel_for(0, static_cast<int64_t>(ranges_.size()), 1, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t first_pixel = (image_begin + item / stripes) * points;
        ranges_[item] = lattice::touched_vertices(lat, first_pixel + stripe_begin(points, stripes, item % stripes),
                                                  first_pixel + stripe_begin(points, stripes, item % stripes + 1));
        float* partial = stripe_partial(item % stripes);
        std::fill(partial + ranges_[item].begin * channels, partial + ranges_[item].end * channels, 0.f);
      }
    });
  }

  float* stripe_partial(int64_t stripe) const { return partials_ + stripe * lat_.num_vertices * channels_; }

  // Sums the partials of each image into buffer_a (resetting them), blurs; returns the result.
  const float* sum_blur(float* buffer_a, float* buffer_b) const {
    const int64_t images = static_cast<int64_t>(ranges_.size()) / stripes_;
    for (int64_t image = 0; image < images; ++image) {
      const lattice::ItemSpan span =
          lattice::item_span(lat_, points_, image_begin_ + image, image_begin_ + image + 1);
      lattice::sum_partials_cpu(lat_, span, partials_, ranges_.data() + image * stripes_, stripes_, channels_,
                                buffer_a);
    }
    const lattice::ItemSpan span = lattice::item_span(lat_, points_, image_begin_, image_begin_ + images);
    return lattice::blur_cpu_into(lat_, span, channels_, buffer_a, buffer_b);
  }

 private:
  const lattice::LatticeView& lat_;
  int64_t points_;
  int64_t stripes_;
  int64_t image_begin_;
  int64_t channels_;
  float* partials_;
  std::vector<lattice::VertexRange> ranges_;  // [images, stripes]
};

// The mean field of the images [image_begin, image_end) once the norms are known. Images share
// no pixels or vertices, so different images may run concurrently. Each pass updates every
// pixel and splats the new Q, stripe by stripe in parallel, into the stripes' partial sums; the
// sums are added and blurred, and the next pass slices them. S > 0 is the slot count.
template <int S>
void meanfield_cpu(const MeanfieldProblem& problem, const lattice::LatticeView& gaussian,
                   const lattice::LatticeView& bilateral, int64_t n_iter, const MeanfieldWorkspace& ws, float* q,
                   int64_t image_begin, int64_t image_end) {
  const int64_t channels = slot_channels(problem);
  const int64_t stripes = pixel_stripes(problem.points);
  const StripedSplat gaussian_splat(gaussian, problem.points, stripes, image_begin, image_end, channels,
                                    ws.gaussian_partials);
  const StripedSplat bilateral_splat(bilateral, problem.points, stripes, image_begin, image_end, channels,
                                     ws.bilateral_partials);
  MeanfieldStep step = initial_step(problem, ws, gaussian, bilateral, n_iter == 0 ? q : nullptr);
  for (int64_t iteration = 0;; ++iteration) {
    const bool last = iteration == n_iter;
    at::parallel_for(image_begin * stripes, image_end * stripes, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> rows(kChunkPixels * channels);
      MeanfieldStep chunk_step = step;
      chunk_step.q_slots = rows.data();
      for (int64_t item = begin; item < end; ++item) {
        const int64_t first_pixel = item / stripes * problem.points, stripe = item % stripes;
        const StripeSplat splat = last ? StripeSplat{nullptr, nullptr}
                                       : StripeSplat{gaussian_splat.stripe_partial(stripe),
                                                     bilateral_splat.stripe_partial(stripe)};
        const int64_t end_pixel = first_pixel + stripe_begin(problem.points, stripes, stripe + 1);
        for (int64_t chunk = first_pixel + stripe_begin(problem.points, stripes, stripe); chunk < end_pixel;) {
          const int64_t chunk_end = std::min(end_pixel, (chunk / kChunkPixels + 1) * kChunkPixels);
          chunk_step.q_first_pixel = chunk;
          update_pixels<S>(problem, chunk_step, chunk, chunk_end, splat);
          chunk = chunk_end;
        }
      }
    });
    if (last) break;
    step.gaussian_vertices = gaussian_splat.sum_blur(ws.gaussian_vertex_a, ws.gaussian_vertex_b);
    step.bilateral_vertices = bilateral_splat.sum_blur(ws.bilateral_vertex_a, ws.bilateral_vertex_b);
    step.q = iteration + 1 == n_iter ? q : nullptr;
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
      // Whole images per thread: one parallel region instead of about a dozen per iteration,
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
                                   double gaussian_compat, double bilateral_compat, int64_t n_iter,
                                   const std::optional<at::Tensor>& compat_matrices) {
  const MeanfieldInputs inputs = checked_meanfield_inputs(
      unary, label_mask,
      {gaussian_offsets, gaussian_weights, gaussian_neighbours, gaussian_splat_ptr, gaussian_splat_entries,
       gaussian_splat_weights},
      {bilateral_offsets, bilateral_weights, bilateral_neighbours, bilateral_splat_ptr, bilateral_splat_entries,
       bilateral_splat_weights},
      gaussian_compat, bilateral_compat, n_iter, compat_matrices);
  at::Tensor q = empty_filled_buffer(inputs.unary.sizes(), inputs.unary.options());
  if (q.numel() == 0) return q;
  const MeanfieldProblem problem = make_problem(inputs, gaussian_compat, bilateral_compat);
  const lattice::LatticeView gaussian = lattice::make_view(inputs.gaussian);
  const lattice::LatticeView bilateral = lattice::make_view(inputs.bilateral);
  at::Tensor workspace = allocate_workspace(problem, gaussian, bilateral, q.options());
  const MeanfieldWorkspace ws = carve_workspace(workspace, problem, gaussian, bilateral);
  const int64_t blocks = unary_block_pixels(gaussian.num_points) / kUnaryBlock;
  at::parallel_for(0, blocks, kPixelGrain / kUnaryBlock, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) gather_unary_block(problem, ws.unary_slots, block);
  });
  meanfield_from_slots_cpu(problem, gaussian, bilateral, n_iter, ws, q.data_ptr<float>());
  return q;
}

RRM_CPU_KERNELS(m) {
  m.impl("dense_crf_meanfield", &dense_crf_meanfield_cpu);
  m.impl("dense_crf", &dense_crf);
}

}  // namespace crf
}  // namespace rrm
