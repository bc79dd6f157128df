// CPU launcher of the dense CRF op family: the bodies of crf.h as one run of phase_runner.h
// (MeanfieldPlan), each image of the batch a stream. Each stripe of an image's pixels (see
// crf.h) scatters the new Q of its pixels into partial sums of its own; the lattice family's
// CPU pieces add them and blur, allocation-free, between the updates.

#include <algorithm>
#include <array>
#include <atomic>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/buffers.h"
#include "common/dispatch.h"
#include "common/library.h"
#include "common/phase_runner.h"
#include "crf/crf_cpu.h"
#include "lattice/lattice_cpu.h"

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

// The unaries of pixels [begin, end) of one image: whole unary blocks at once, the pixels of
// blocks the range cuts one by one.
void gather_unary_range(const MeanfieldProblem& problem, float* unary_slots, int64_t begin, int64_t end) {
  for (int64_t pixel = begin; pixel < end;) {
    if (pixel % kUnaryBlock == 0 && pixel + kUnaryBlock <= end) {
      gather_unary_pixels<kUnaryBlock>(problem, unary_slots, pixel);
      pixel += kUnaryBlock;
    } else {
      gather_unary_pixels(problem, unary_slots, pixel++);
    }
  }
}

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

// Calls body(GaussianD1, BilateralD1) with the lattices' entries per pixel as constants for the
// lattices of dense_crf (d = 2 and 5), so that the slices' and splats' entry loops unroll, and
// with 0s (runtime counts) for others.
template <typename Body>
RRM_INLINE void with_entry_counts(const MeanfieldStep& step, const Body& body) {
  if (step.gaussian.d1 == 3 && step.bilateral.d1 == 6) {
    body(std::integral_constant<int, 3>(), std::integral_constant<int, 6>());
  } else {
    body(std::integral_constant<int, 0>(), std::integral_constant<int, 0>());
  }
}

// Scatters the Q rows of pixels [begin, end) (step.q_slots), scaled by `norm`, into the partial
// sums of lattice `lat`, which has D1 entries per pixel (0: lat.d1).
template <int D1>
void scatter_pixels(const MeanfieldStep& step, const lattice::LatticeView& lat, const float* norm, int64_t begin,
                    int64_t end, int64_t channels, float* partial) {
  // The slot counts of up to 24 labels, and twice those for mining's two groups.
  with_constant<4, 8, 12, 16, 20, 24, 32, 40, 48>(channels, [&](auto k) {
    for (int64_t pixel = begin; pixel < end; ++pixel) {
      scatter_pixel<decltype(k)::value, D1>(lat, pixel, q_row(step, pixel, channels), norm[pixel], channels, partial);
    }
  });
}

// scatter_pixels into both lattices' partial sums in one pass over the pixels: each Q row is
// read once, and the lattices' entries of a pixel are loaded side by side.
template <int GaussianD1, int BilateralD1>
void scatter_pixels_both(const MeanfieldStep& step, int64_t begin, int64_t end, int64_t channels,
                         float* gaussian_partial, float* bilateral_partial) {
  with_constant<4, 8, 12, 16, 20, 24, 32, 40, 48>(channels, [&](auto k) {
    constexpr int K = decltype(k)::value;
    for (int64_t pixel = begin; pixel < end; ++pixel) {
      const float* row = q_row(step, pixel, channels);
      scatter_pixel<K, GaussianD1>(step.gaussian, pixel, row, step.gaussian_norm[pixel], channels, gaussian_partial);
      scatter_pixel<K, BilateralD1>(step.bilateral, pixel, row, step.bilateral_norm[pixel], channels,
                                    bilateral_partial);
    }
  });
}

// The updates of pixels [begin, end) of one image (whole vectors of pixels, then one by one),
// which leave their new Q in their rows of step.q_slots (and in step.q, if set).
template <int S>
void update_pixels(const MeanfieldProblem& problem_in, const MeanfieldStep& step_in, int64_t begin, int64_t end) {
  // Local copies: the vector stores may alias any memory the arguments point to, which would
  // force every pointer and scale to be reloaded after each store.
  const MeanfieldProblem problem = problem_in;
  const MeanfieldStep step = step_in;
  with_entry_counts(step, [&](auto gaussian_d1, auto bilateral_d1) {
    int64_t i = begin;
    // The compatibility matrices run the device-generic body pixel by pixel.
    if constexpr (S > 0) if (problem.compat_matrices == nullptr) {
      // Vectors of pixels start where unary_slots' blocks do.
      for (; i % kUnaryBlock != 0 && i < end; ++i) update_pixel<S>(problem, step, i);
      for (; i + kPixelLanes <= end; i += kPixelLanes) {
        for (int64_t group = 0; group < problem.groups; ++group) {
          update_group_lanes<S, decltype(gaussian_d1)::value, decltype(bilateral_d1)::value>(problem, step, i, group);
        }
      }
    }
    for (; i < end; ++i) update_pixel<S>(problem, step, i);
  });
}

// A mean field run's phases (phase_runner.h), each image a stream:
//   prepare            the unaries, each lattice's normalisation factors (with the blur by
//                      axes, over this and the next phases, see prepare_phases), and the
//                      vertices each stripe (see crf.h) splats into;
//   then per iteration
//     update           every pixel's update (Q = softmax(-U) the first time), and the splat of
//                      the new Q into each stripe's partial sums, see below;
//     blur             each lattice's partial sums added (and zeroed for the next splat;
//                      prepare zeroes them for the first) and blurred: each lattice whole, on
//                      one thread, where there are at least as many images as threads;
//                      otherwise shared by vertex ranges, a phase for the sums and one per
//                      axis (see vertex_chunks);
//   and a last update, which writes q.
// While there are no more threads than stripes (of all images), update and splat run together,
// stripe by stripe, in chunks whose Q rows stay in the thread's L1 cache between the two (the Q
// of a chunk is only read by its splat), and both lattices are splatted in one pass over the
// pixels. A stripe's chunks add to the same partial sums in pixel order, so they run one at a
// time and in order (StripeChunks); a thread starts from a stripe of its own, so that with as
// many threads as stripes each keeps its stripe's partial sums in its cache, and takes chunks of
// another stripe once its own is done, unless a thread holds it: a helper that comes late finds
// its stripe partly or wholly done by the others, but a thread the scheduler parks while it holds
// a stripe runs the rest of that stripe's chunks of the phase itself once it is back, as the
// others leave them to it rather than wait. With more threads than stripes, the updates are shared at any chunking,
// with every Q row in memory, and a splat phase follows, a chunk per stripe and lattice. Both
// give the same bits: every pixel's update and every vertex's sums are the same operations.
template <int S>
class MeanfieldPlan {
 public:
  MeanfieldPlan(const MeanfieldProblem& problem, const lattice::LatticeView& gaussian,
                const lattice::LatticeView& bilateral, int64_t n_iter, const MeanfieldWorkspace& ws,
                UnaryFill fill_unary, float* q, int threads)
      : problem_(problem),
        n_iter_(n_iter),
        ws_(ws),
        fill_unary_(fill_unary),
        q_(q),
        channels_(slot_channels(problem)),
        stripes_(pixel_stripes(problem.points)),
        together_(threads <= problem.batch * stripes_),
        blur_by_axes_(blur_by_axes(problem, gaussian, bilateral, threads)),
        blur_axes_(std::max(gaussian.d1, bilateral.d1)),
        lattices_{{{gaussian, ws.gaussian_vertex_a, ws.gaussian_vertex_b, ws.gaussian_norm, ws.gaussian_partials},
                   {bilateral, ws.bilateral_vertex_a, ws.bilateral_vertex_b, ws.bilateral_norm,
                    ws.bilateral_partials}}},
        rows_(threads),
        stripe_chunks_(problem.batch, stripes_) {
    for (Lattice& lattice : lattices_) {
      for (int64_t image = 0; image < problem.batch; ++image) {
        lattice.spans.push_back(lattice::item_span(lattice.view, problem.points, image, image + 1));
      }
      lattice.ranges.resize(problem.batch * stripes_);
    }
    for (int64_t image = 0; image < problem.batch; ++image) {
      for (int64_t stripe = 0; stripe < stripes_; ++stripe) {
        stripe_chunks_.set_chunks(image, stripe, stripe_chunk_count(image, stripe));
      }
    }
  }

  int64_t phases() const { return prepare_phases() + phases_per_iteration() * n_iter_ + 1; }

  int64_t chunks(int64_t image, int64_t phase) const {
    const Phase p = decode(phase);
    switch (p.kind) {
      case kPrepare:
        return norm_chunks(image) + kLattices * stripes_ + chunks_of(problem_.points, kUnaryChunk);
      case kNormAxis:
        return vertex_chunks(image, 0, p.axis) + vertex_chunks(image, 1, p.axis);
      case kNormSlice:
        return kLattices * chunks_of(problem_.points, kUnaryChunk);
      case kUpdate:
        return splats_with_update(p.iteration) ? fused_chunks(image) : update_chunks(image);
      case kSplat:
        return kLattices * stripes_;
      case kBlur:
        return blur_by_axes_ ? vertex_chunks(image, 0, -1) + vertex_chunks(image, 1, -1) : kLattices;
      case kBlurAxis:
        return vertex_chunks(image, 0, p.axis) + vertex_chunks(image, 1, p.axis);
    }
    return 0;
  }

  void run(int64_t image, int64_t phase, int64_t chunk, int thread) {
    const Phase p = decode(phase);
    switch (p.kind) {
      case kPrepare:
        return prepare(image, chunk);
      case kNormAxis:
        return blur_vertex_chunk(image, chunk, p.axis, 1);
      case kNormSlice:
        return slice_norms(image, chunk);
      case kUpdate:
        if (splats_with_update(p.iteration)) {
          return stripe_chunks_.run(image, thread % stripes_, [&](int64_t stripe, int64_t stripe_chunk) {
            update_and_splat(image, stripe, stripe_chunk, p.iteration, thread);
          });
        }
        return update(image, chunk, p.iteration, thread);
      case kSplat:
        // The bilateral lattice, with twice the entries, first.
        return splat(image, lattice_of(chunk, stripes_), chunk % stripes_, p.iteration);
      case kBlur:
        return blur_by_axes_ ? sum_vertex_chunk(image, chunk) : sum_and_blur(image, lattice_of(chunk, 1));
      case kBlurAxis:
        return blur_vertex_chunk(image, chunk, p.axis, channels_);
    }
  }

  void finish(int64_t image, int64_t phase) {
    const Phase p = decode(phase);
    if (p.kind == kUpdate && splats_with_update(p.iteration)) stripe_chunks_.reset(image);
  }

 private:
  static constexpr int kLattices = 2;  // gaussian, bilateral
  // Pixels per chunk of the unaries; the updates' chunks are those of kChunkPixels.
  static constexpr int64_t kUnaryChunk = 4096;

  // Vertices per chunk of a blur shared by vertex ranges.
  static constexpr int32_t kBlurVertexChunk = 1024;

  enum Kind { kPrepare, kNormAxis, kNormSlice, kUpdate, kSplat, kBlur, kBlurAxis };
  struct Phase {
    Kind kind;
    int64_t iteration;
    int axis = -1;  // kNormAxis, kBlurAxis: the axis (step) of the blur
  };

  struct Lattice {
    lattice::LatticeView view;
    float* vertex_a;
    float* vertex_b;
    float* norm;
    float* partials;
    std::vector<lattice::ItemSpan> spans;      // [images]
    std::vector<lattice::VertexRange> ranges;  // [images, stripes] vertices each stripe splats into
  };

  // The chunks of each image's stripes, handed out in order, one chunk of a stripe at a time.
  //
  // A run of the fused update phase (one per chunk of the phase) adds one chunk to the image's
  // debt and pays off what it can: it holds a stripe with chunks left, runs that stripe's next
  // chunks while there is debt, and lets it go. A run that finds every stripe with chunks left
  // held by other threads returns at once instead of waiting: each holder checks the debt again
  // after letting its stripe go (the sequentially consistent order of the debt and the holds
  // sees to it that one of them sees the other), and pays it. So no thread ever waits for
  // another here, and when the last run returns the debt is zero: every chunk has run.
  class StripeChunks {
   public:
    StripeChunks(int64_t images, int64_t stripes)
        : stripes_(stripes), images_(new Image[images]), stripe_state_(new Stripe[images * stripes]) {}

    void set_chunks(int64_t image, int64_t stripe, int64_t chunks) {
      stripe_state_[image * stripes_ + stripe].chunks = chunks;
    }

    template <typename Body>
    void run(int64_t image, int64_t home, const Body& body) {
      std::atomic<int64_t>& debt = images_[image].debt;
      debt.fetch_add(1);
      while (debt.load() > 0) {
        Stripe* held = hold_stripe(image, home);
        if (held == nullptr) return;
        const int64_t stripe = held - &stripe_state_[image * stripes_];
        int64_t next = held->next.load(std::memory_order_relaxed);
        while (next < held->chunks && pay_one(debt)) body(stripe, next++);
        held->next.store(next, std::memory_order_relaxed);
        held->held.store(false);
      }
    }

    // Between phases: every stripe from its first chunk again.
    void reset(int64_t image) {
      for (int64_t stripe = 0; stripe < stripes_; ++stripe) {
        stripe_state_[image * stripes_ + stripe].next.store(0, std::memory_order_relaxed);
      }
    }

   private:
    struct alignas(64) Image {
      std::atomic<int64_t> debt{0};
    };
    struct alignas(64) Stripe {
      std::atomic<bool> held{false};
      std::atomic<int64_t> next{0};  // the next chunk to run; written by the holder only
      int64_t chunks = 0;
    };

    // Holds a stripe of the image with chunks left, `home` first; null if there is none free.
    Stripe* hold_stripe(int64_t image, int64_t home) {
      for (int64_t i = 0; i < stripes_; ++i) {
        Stripe& stripe = stripe_state_[image * stripes_ + (home + i) % stripes_];
        if (stripe.next.load(std::memory_order_relaxed) >= stripe.chunks || stripe.held.exchange(true)) continue;
        if (stripe.next.load(std::memory_order_relaxed) < stripe.chunks) return &stripe;
        stripe.held.store(false);
      }
      return nullptr;
    }

    static bool pay_one(std::atomic<int64_t>& debt) {
      int64_t owed = debt.load();
      while (owed > 0) {
        if (debt.compare_exchange_weak(owed, owed - 1)) return true;
      }
      return false;
    }

    const int64_t stripes_;
    std::unique_ptr<Image[]> images_;
    std::unique_ptr<Stripe[]> stripe_state_;
  };

  // A blur shared by vertex ranges (blur_by_axes_). A lattice blurred whole on one thread
  // leaves the other threads idle for the difference between the lattices' blurs, which at one
  // image of 321 x 321 is most of the blur: the bilateral lattice's, whose neighbours lie
  // scattered in memory, takes 4 to 5 times the gaussian's. Ranges of channels cannot share the
  // 4 channels of up to 3 labels, and cost copies. Vertex ranges can, at the cost of a wait after
  // the sums and after each axis: kBlur sums the partial sums of vertex ranges of both lattices,
  // then kBlurAxis k blurs vertex ranges of the lattices that have an axis k. axis -1: the sums.
  // It is used from 8,192 vertices per image in the larger lattice on (a 321 x 321 photograph has
  // 11,596 to 13,562, a 161 x 161 one 3,465 to 5,313): below, the idle thread loses little (at
  // 161 x 161 whole lattices were already faster than the kernels that blurred by axes in a
  // parallel region per step), while each of the 7 extra waits per iteration can become a wait
  // for a thread the scheduler has parked on a busy machine.
  static bool blur_by_axes(const MeanfieldProblem& problem, const lattice::LatticeView& gaussian,
                           const lattice::LatticeView& bilateral, int threads) {
    constexpr int64_t kBlurByAxesVertices = 8192;
    const int64_t vertices_per_image = std::max(gaussian.num_vertices, bilateral.num_vertices) / problem.batch;
    return problem.batch < threads && vertices_per_image >= kBlurByAxesVertices;
  }

  int64_t vertex_chunks(int64_t image, int index, int axis) const {
    const Lattice& lattice = lattices_[index];
    if (axis >= lattice.view.d1) return 0;
    const lattice::ItemSpan& span = lattice.spans[image];
    return chunks_of(span.vertex_end - span.vertex_begin, kBlurVertexChunk);
  }

  // The lattice and vertex range of chunk `chunk` of such a phase, the bilateral lattice's first.
  std::pair<int, lattice::VertexRange> vertex_chunk(int64_t image, int64_t chunk, int axis) const {
    const int64_t bilateral_chunks = vertex_chunks(image, 1, axis);
    const int index = chunk < bilateral_chunks ? 1 : 0;
    const int64_t first = chunk < bilateral_chunks ? chunk : chunk - bilateral_chunks;
    const lattice::ItemSpan& span = lattices_[index].spans[image];
    const int32_t begin = span.vertex_begin + static_cast<int32_t>(first) * kBlurVertexChunk;
    return {index, {begin, std::min(span.vertex_end, begin + kBlurVertexChunk)}};
  }

  void sum_and_blur(int64_t image, int index) {
    Lattice& lattice = lattices_[index];
    lattice::sum_and_blur(lattice.view, lattice.spans[image], lattice.partials, lattice.ranges.data() + image * stripes_,
                          stripes_, channels_, lattice.vertex_a, lattice.vertex_b);
  }

  void sum_vertex_chunk(int64_t image, int64_t chunk) {
    const auto [index, range] = vertex_chunk(image, chunk, -1);
    Lattice& lattice = lattices_[index];
    lattice::sum_partials(lattice.view, lattice.partials, lattice.ranges.data() + image * stripes_, stripes_,
                          channels_, range.begin, range.end, lattice.vertex_a, lattice.vertex_b);
  }

  // Blurs channels [0, width) of the chunk's vertex range along `axis`.
  void blur_vertex_chunk(int64_t image, int64_t chunk, int axis, int64_t width) {
    const auto [index, range] = vertex_chunk(image, chunk, axis);
    Lattice& lattice = lattices_[index];
    lattice::blur_step(lattice.view, range.begin, range.end, channels_, {0, width}, axis, lattice.vertex_a,
                       lattice.vertex_b);
  }

  // The normalisation factors: with the blur by axes, the filter of ones is shared the same way
  // (its splat by vertex ranges in kPrepare, its blur in kNormAxis phases, its slice by runs of
  // pixels in kNormSlice); otherwise each lattice's is one chunk of kPrepare.
  int64_t prepare_phases() const { return blur_by_axes_ ? 2 + blur_axes_ : 1; }
  int64_t norm_chunks(int64_t image) const {
    return blur_by_axes_ ? vertex_chunks(image, 0, -1) + vertex_chunks(image, 1, -1) : kLattices;
  }

  // Norms are filtered in channel 0 of the image's vertex rows: images may be at different
  // phases, and the rows are the only part of the buffers that is the image's alone.
  void filter_norms(int64_t image, int64_t chunk) {
    if (blur_by_axes_) {
      const auto [index, range] = vertex_chunk(image, chunk, -1);
      Lattice& lattice = lattices_[index];
      lattice::splat_ones(lattice.view, range.begin, range.end, channels_, lattice.vertex_a, lattice.vertex_b);
      return;
    }
    Lattice& lattice = lattices_[lattice_of(chunk, 1)];
    const lattice::ItemSpan& span = lattice.spans[image];
    lattice::filter_ones(lattice.view, span, channels_, lattice.vertex_a, lattice.vertex_b, lattice.norm);
    for (int64_t p = span.point_begin; p < span.point_end; ++p) lattice.norm[p] = symmetric_norm(lattice.norm[p]);
  }

  void slice_norms(int64_t image, int64_t chunk) {
    const int64_t pixel_chunks = chunks_of(problem_.points, kUnaryChunk);
    Lattice& lattice = lattices_[lattice_of(chunk, pixel_chunks)];
    const int64_t first = image * problem_.points + (chunk % pixel_chunks) * kUnaryChunk;
    const int64_t end = std::min(first + kUnaryChunk, (image + 1) * problem_.points);
    lattice::slice_ones(lattice.view, first, end, channels_, lattice.vertex_a, lattice.norm);
    for (int64_t p = first; p < end; ++p) lattice.norm[p] = symmetric_norm(lattice.norm[p]);
  }

  int64_t update_phases() const { return together_ ? 1 : 2; }
  int64_t phases_per_iteration() const { return update_phases() + (blur_by_axes_ ? 1 + blur_axes_ : 1); }

  Phase decode(int64_t phase) const {
    if (phase == 0) return {kPrepare, 0};
    if (phase < prepare_phases()) {
      return phase <= blur_axes_ ? Phase{kNormAxis, 0, static_cast<int>(phase - 1)} : Phase{kNormSlice, 0};
    }
    const int64_t iteration = (phase - prepare_phases()) / phases_per_iteration();
    const int64_t step = (phase - prepare_phases()) % phases_per_iteration();
    if (step == 0) return {kUpdate, iteration};
    if (step < update_phases()) return {kSplat, iteration};
    const int64_t blur_step = step - update_phases();
    return blur_step == 0 ? Phase{kBlur, iteration} : Phase{kBlurAxis, iteration, static_cast<int>(blur_step - 1)};
  }

  bool splats_with_update(int64_t iteration) const { return together_ && iteration < n_iter_; }

  // Chunk k of `parts` per lattice is lattice 1 (bilateral) first.
  static int lattice_of(int64_t chunk, int64_t parts) { return chunk < parts ? 1 : 0; }

  // An image's update chunks: the runs of kChunkPixels pixels by global index that its pixels
  // fall in, cut to the image.
  int64_t update_chunks(int64_t image) const {
    return chunks_of((image + 1) * problem_.points, kChunkPixels) - image * problem_.points / kChunkPixels;
  }
  std::pair<int64_t, int64_t> update_chunk(int64_t image, int64_t chunk) const {
    const int64_t first = image * problem_.points, end = first + problem_.points;
    const int64_t aligned = (first / kChunkPixels + chunk) * kChunkPixels;
    return {std::max(aligned, first), std::min(aligned + kChunkPixels, end)};
  }

  // The same runs of kChunkPixels pixels, cut to a stripe.
  int64_t stripe_chunk_count(int64_t image, int64_t stripe) const {
    const int64_t first = stripe_pixel(image, stripe), end = stripe_pixel(image, stripe + 1);
    return end > first ? chunks_of(end, kChunkPixels) - first / kChunkPixels : 0;
  }
  std::pair<int64_t, int64_t> stripe_chunk(int64_t image, int64_t stripe, int64_t chunk) const {
    const int64_t first = stripe_pixel(image, stripe), end = stripe_pixel(image, stripe + 1);
    const int64_t aligned = (first / kChunkPixels + chunk) * kChunkPixels;
    return {std::max(aligned, first), std::min(aligned + kChunkPixels, end)};
  }
  int64_t fused_chunks(int64_t image) const {
    int64_t chunks = 0;
    for (int64_t stripe = 0; stripe < stripes_; ++stripe) chunks += stripe_chunk_count(image, stripe);
    return chunks;
  }

  int64_t stripe_pixel(int64_t image, int64_t stripe) const {
    return image * problem_.points + stripe_begin(problem_.points, stripes_, stripe);
  }

  float* partial(const Lattice& lattice, int64_t stripe) const {
    return lattice.partials + stripe * lattice.view.num_vertices * channels_;
  }

  // Zeroes the stripe's partial sums of one lattice over the vertices it splats into, before
  // the first splat; the blur's sums zero what they read for the next (lattice::sum_partials).
  void zero_partial(int index, int64_t image, int64_t stripe) const {
    const Lattice& lattice = lattices_[index];
    const lattice::VertexRange& range = lattice.ranges[image * stripes_ + stripe];
    std::fill(partial(lattice, stripe) + range.begin * channels_, partial(lattice, stripe) + range.end * channels_,
              0.f);
  }

  // The step of update `iteration`; its Q rows go to q_slots unless the caller moves them.
  MeanfieldStep step_of(int64_t iteration) const {
    MeanfieldStep step = initial_step(problem_, ws_, lattices_[0].view, lattices_[1].view,
                                      iteration == n_iter_ ? q_ : nullptr);
    if (iteration > 0) {
      // The blur leaves its result in vertex_a (see lattice::sum_and_blur).
      step.gaussian_vertices = lattices_[0].vertex_a;
      step.bilateral_vertices = lattices_[1].vertex_a;
    }
    return step;
  }

  // The thread's rows for the Q of one chunk of pixels.
  float* thread_rows(int thread) {
    std::vector<float>& rows = rows_[thread];
    rows.resize(kChunkPixels * channels_);
    return rows.data();
  }

  void prepare(int64_t image, int64_t chunk) {
    if (chunk < norm_chunks(image)) return filter_norms(image, chunk);
    chunk -= norm_chunks(image);
    if (chunk < kLattices * stripes_) {
      Lattice& lattice = lattices_[lattice_of(chunk, stripes_)];
      const int64_t stripe = chunk % stripes_;
      lattice.ranges[image * stripes_ + stripe] =
          lattice::touched_vertices(lattice.view, stripe_pixel(image, stripe), stripe_pixel(image, stripe + 1));
      return zero_partial(lattice_of(chunk, stripes_), image, stripe);
    }
    chunk -= kLattices * stripes_;
    const int64_t first = image * problem_.points + chunk * kUnaryChunk;
    fill_unary_(first, std::min(first + kUnaryChunk, (image + 1) * problem_.points));
  }

  void update(int64_t image, int64_t chunk, int64_t iteration, int thread) {
    const auto [begin, end] = update_chunk(image, chunk);
    MeanfieldStep step = step_of(iteration);
    if (iteration == n_iter_) {
      // Nothing reads the last Q rows but the update itself.
      step.q_slots = thread_rows(thread);
      step.q_first_pixel = begin;
    }
    update_pixels<S>(problem_, step, begin, end);
  }

  void update_and_splat(int64_t image, int64_t stripe, int64_t chunk, int64_t iteration, int thread) {
    const auto [begin, end] = stripe_chunk(image, stripe, chunk);
    MeanfieldStep step = step_of(iteration);
    step.q_slots = thread_rows(thread);
    step.q_first_pixel = begin;
    update_pixels<S>(problem_, step, begin, end);
    with_entry_counts(step, [&](auto gaussian_d1, auto bilateral_d1) {
      scatter_pixels_both<decltype(gaussian_d1)::value, decltype(bilateral_d1)::value>(
          step, begin, end, channels_, partial(lattices_[0], stripe), partial(lattices_[1], stripe));
    });
  }

  void splat(int64_t image, int index, int64_t stripe, int64_t iteration) {
    const MeanfieldStep step = step_of(iteration);
    const Lattice& lattice = lattices_[index];
    const int64_t begin = stripe_pixel(image, stripe), end = stripe_pixel(image, stripe + 1);
    float* out = partial(lattice, stripe);
    with_entry_counts(step, [&](auto gaussian_d1, auto bilateral_d1) {
      if (index == 0) {
        scatter_pixels<decltype(gaussian_d1)::value>(step, lattice.view, lattice.norm, begin, end, channels_, out);
      } else {
        scatter_pixels<decltype(bilateral_d1)::value>(step, lattice.view, lattice.norm, begin, end, channels_, out);
      }
    });
  }

  const MeanfieldProblem problem_;
  const int64_t n_iter_;
  const MeanfieldWorkspace ws_;
  const UnaryFill fill_unary_;
  float* q_;
  const int64_t channels_;
  const int64_t stripes_;
  const bool together_;
  const bool blur_by_axes_;
  const int blur_axes_;  // the larger d + 1 of the two lattices
  std::array<Lattice, kLattices> lattices_;
  std::vector<std::vector<float>> rows_;  // per thread
  StripeChunks stripe_chunks_;
};

}  // namespace

int meanfield_threads(int64_t slot_values, int64_t n_iter) {
  // A thread pays for itself from about this many slot updates on.
  constexpr int64_t kSlotUpdatesPerThread = 32768;
  return phase_threads(slot_values * (n_iter + 1), kSlotUpdatesPerThread);
}

void meanfield_cpu(const MeanfieldProblem& problem, const lattice::LatticeView& gaussian,
                   const lattice::LatticeView& bilateral, int64_t n_iter, const MeanfieldWorkspace& ws,
                   UnaryFill fill_unary, float* q) {
  const int threads = meanfield_threads(problem.batch * problem.points * slot_channels(problem), n_iter);
  // The update unrolls completely at the slot counts of up to 24 present labels.
  with_constant<4, 8, 12, 16, 20, 24>(problem.slots, [&](auto slots) {
    MeanfieldPlan<decltype(slots)::value> plan(problem, gaussian, bilateral, n_iter, ws, fill_unary, q, threads);
    run_phases(plan, problem.batch, threads);
  });
}

// The op's runs and ATen calls share one team (phase_runner.h): one parallel region per call.
at::Tensor dense_crf_meanfield_cpu(const at::Tensor& unary, const std::optional<at::Tensor>& label_mask,
                                   at::TensorList gaussian_lattice, at::TensorList bilateral_lattice,
                                   double gaussian_compat, double bilateral_compat, int64_t n_iter,
                                   const std::optional<at::Tensor>& compat_matrices) {
  // The team's size grows with n_iter: checked before it is sized.
  check_iterations(n_iter);
  const lattice::LatticeTuple gaussian_tensors = lattice::lattice_of(gaussian_lattice, "gaussian");
  const lattice::LatticeTuple bilateral_tensors = lattice::lattice_of(bilateral_lattice, "bilateral");
  at::Tensor q;
  with_team(meanfield_threads(unary.numel(), n_iter), [&] {
    const MeanfieldInputs inputs = checked_meanfield_inputs(unary, label_mask, gaussian_tensors, bilateral_tensors,
                                                            gaussian_compat, bilateral_compat, n_iter,
                                                            compat_matrices);
    q = empty_filled_buffer(inputs.unary.sizes(), inputs.unary.options());
    if (q.numel() == 0) return;
    const MeanfieldProblem problem = make_problem(inputs, gaussian_compat, bilateral_compat);
    const lattice::LatticeView gaussian = lattice::make_view(inputs.gaussian);
    const lattice::LatticeView bilateral = lattice::make_view(inputs.bilateral);
    at::Tensor workspace = allocate_workspace(problem, gaussian, bilateral, q.options());
    const MeanfieldWorkspace ws = carve_workspace(workspace, problem, gaussian, bilateral);
    meanfield_cpu(problem, gaussian, bilateral, n_iter, ws,
                  [&](int64_t begin, int64_t end) { gather_unary_range(problem, ws.unary_slots, begin, end); },
                  q.data_ptr<float>());
  });
  return q;
}

RRM_CPU_KERNELS(m) { m.impl("dense_crf_meanfield", &dense_crf_meanfield_cpu); }

}  // namespace crf
}  // namespace rrm
