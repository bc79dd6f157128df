// The CPU lattice filter: lattice_filter's kernel (splat, blur along the d+1 axes, slice over
// the bodies of lattice.h) as one run of phase_runner.h per call, each batch item a stream of
// three phases, and the pieces of it that the CPU mean field runs itself (lattice_cpu.h).
// The blur's channels are independent, so its chunks are channel ranges, each blurred through
// all the axes, rather than vertex ranges, which would need every axis finished before the
// next: one wait per filter instead of one per axis.
#include <ATen/Dispatch.h>

#include <algorithm>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/buffers.h"
#include "common/dispatch.h"
#include "common/phase_runner.h"
#include "lattice/lattice_cpu.h"

namespace rrm {
namespace lattice {
namespace {

// Points per chunk of the slice, vertices per chunk of the gathering splat.
constexpr int64_t kPointChunk = 512;
constexpr int64_t kVertexChunk = 256;
// A thread pays for itself from about this many filtered values (points times channels) on.
constexpr int64_t kValuesPerThread = 32768;

// The channel count of a filter call: the constant CH when CH > 0, else a runtime value. With
// a constant the per-entry channel loops below compile to straight vector code; with a runtime
// count each entry pays for loop set-up and aliasing checks, which made the filter several times
// slower at the CRF's few channels.
template <int CH>
struct Channels {
  static constexpr int kConstant = CH;
  int64_t runtime;
  constexpr int64_t count() const { return CH > 0 ? CH : runtime; }
};

// Calls body(Channels<CH>) with CH = channels for the counts the ops use most (the symmetric
// norm's 1, the CRF's slot counts, multiples of 4, and 21 for PASCAL VOC's classes), else 0.
template <typename Body>
void with_channels(int64_t channels, const Body& body) {
  with_constant<1, 4, 8, 12, 16, 21, 24, 32, 48>(channels, [&](auto count) {
    body(Channels<decltype(count)::value>{channels});
  });
}

// Calls body(std::integral_constant<int, K>(), c_begin) over the channels in blocks of K = 8,
// then 4, then 1 (see the note on blocks in lattice.h).
template <typename Body>
RRM_INLINE void for_channel_blocks(int64_t channels, const Body& body) {
  int64_t c = 0;
  for (; c + 8 <= channels; c += 8) body(std::integral_constant<int, 8>(), c);
  for (; c + 4 <= channels; c += 4) body(std::integral_constant<int, 4>(), c);
  for (; c < channels; ++c) body(std::integral_constant<int, 1>(), c);
}

// From this many channels on, a multi-threaded splat scatters (each thread its own vertex
// range) instead of gathering: the gather reads a whole value row per contribution at random,
// which costs more than every thread scanning all entries once the rows are wide.
constexpr int64_t kScatterChannels = 8;

// row += w * in over `channels` values in[c * stride]. The rows never overlap; saying so
// (restrict) and asking for vector code (omp simd) keeps GCC from emitting scalar code or
// per-call overlap checks, which cost more than the arithmetic at a few channels.
template <typename scalar_t>
RRM_INLINE void add_scaled_row(scalar_t* __restrict__ row, const scalar_t* __restrict__ in, scalar_t w,
                               int64_t channels, int64_t stride) {
#pragma omp simd
  for (int64_t c = 0; c < channels; ++c) row[c] = row[c] + w * in[c * stride];
}

// One filter call's values: an array and its layout (see ValueLayout). kUnitStride: channels
// are adjacent (points-last), known at compile time so the channel loops vectorise.
template <typename scalar_t, bool kUnitStride>
struct Values {
  scalar_t* data;
  ValueLayout layout;

  int64_t channel_stride() const { return kUnitStride ? 1 : layout.channel_stride; }
  ValueLayout known_layout() const { return {layout.first_point, layout.point_stride, channel_stride()}; }
};

// Splat of the vertices [vertex_begin, vertex_end) by scattering the span's points in order into
// the first channels of vertex rows of `stride` values. Each vertex receives its contributions
// in ascending entry order, starting from zero, exactly the sum splat_vertex gathers, so the
// result is bitwise the same; but the values are read once and in order while the writes go to
// the vertex rows, which are few and stay in cache.
template <typename scalar_t, int CH, bool kUnitStride>
void splat_by_scatter(const LatticeView& lat, const ItemSpan& span, const Values<const scalar_t, kUnitStride>& in,
                      Channels<CH> ch, int64_t stride, int32_t vertex_begin, int32_t vertex_end,
                      scalar_t* vertex_values) {
  const int64_t channels = ch.count();
  for (int64_t v = vertex_begin; v < vertex_end; ++v) {
    std::fill(vertex_values + v * stride, vertex_values + v * stride + channels, scalar_t(0));
  }
  const ValueLayout layout = in.known_layout();
  for (int64_t point = span.point_begin; point < span.point_end; ++point) {
    const scalar_t* row = in.data + layout.offset(point, 0);
    for (int64_t e = point * lat.d1; e < (point + 1) * lat.d1; ++e) {
      const int32_t v = lat.offsets[e];
      if (v < vertex_begin || v >= vertex_end) continue;
      add_scaled_row(vertex_values + static_cast<int64_t>(v) * stride, row, static_cast<scalar_t>(lat.weights[e]),
                     channels, layout.channel_stride);
    }
  }
}

// The first vertex of part `part` of `parts` vertex ranges of the span holding equal numbers of
// entries (the scattering splat's split among threads).
int32_t scatter_part_begin(const LatticeView& lat, const ItemSpan& span, int64_t parts, int64_t part) {
  if (part == parts) return span.vertex_end;
  const int32_t* ptr_begin = lat.splat_ptr + span.vertex_begin;
  const int32_t* ptr_end = lat.splat_ptr + span.vertex_end;
  const int64_t first_entry = *ptr_begin, span_entries = *ptr_end - first_entry;
  const int64_t target = first_entry + span_entries * part / parts;
  return static_cast<int32_t>(std::lower_bound(ptr_begin, ptr_end, target) - lat.splat_ptr);
}

// A blur's channels are independent, so `threads` threads can blur `channels` channels as
// channel_parts ranges, each through all the axes with no wait in between: ranges of whole
// vectors of 4 channels, as many as there are threads or vectors.
int64_t channel_parts(int64_t channels, int threads) {
  return std::clamp<int64_t>(std::min<int64_t>(threads, chunks_of(channels, 4)), 1, threads);
}

ChannelRange channel_part(int64_t channels, int64_t parts, int64_t part) {
  const int64_t width = chunks_of(chunks_of(channels, 4), parts) * 4;
  return {std::min(channels, part * width), std::min(channels, (part + 1) * width)};
}

// The buffer, a or b, that a blur of d1 axes must start from to leave its result in buffer_a.
template <typename T>
T* blur_start(int d1, T* buffer_a, T* buffer_b) {
  return d1 % 2 == 0 ? buffer_a : buffer_b;
}

// The buffers that step `step` of such a blur reads and writes.
template <typename T>
std::pair<T*, T*> blur_step_buffers(int d1, int step, T* buffer_a, T* buffer_b) {
  T* start = blur_start(d1, buffer_a, buffer_b);
  T* other = start == buffer_a ? buffer_b : buffer_a;
  return step % 2 == 0 ? std::pair<T*, T*>{start, other} : std::pair<T*, T*>{other, start};
}

// Blurs channels `range` of the vertex rows [vertex_begin, vertex_end) of `stride` values in
// src along `axis` into the same rows of dst.
template <typename scalar_t>
void blur_axis_range(const LatticeView& lat, int32_t vertex_begin, int32_t vertex_end, int64_t stride,
                     ChannelRange range, int axis, const scalar_t* src, scalar_t* dst) {
  const int64_t width = range.end - range.begin;
  with_constant<1, 4, 8, 12, 16, 20, 24, 32, 48>(width, [&](auto constant_width) {
    constexpr int W = decltype(constant_width)::value;
    for (int32_t v = vertex_begin; v < vertex_end; ++v) {
      // With a constant width of whole vectors a vertex is one block: its neighbours are
      // looked up once. Other widths (21) run faster in blocks of 8, 4 and 1.
      if constexpr (W > 0 && W % 4 == 0) {
        blur_vertex<scalar_t, W>(lat, v, axis, src, stride, range.begin, dst);
      } else {
        for_channel_blocks(width, [&](auto block, int64_t c) {
          blur_vertex<scalar_t, decltype(block)::value>(lat, v, axis, src, stride, range.begin + c, dst);
        });
      }
    }
  });
}

// Blurs channels `range` of the vertex rows [vertex_begin, vertex_end) of `stride` values in
// blur_start(d1, buffer_a, buffer_b) along the d+1 axes (in reverse order if reverse),
// ping-ponging with the other buffer, which leaves the result in buffer_a.
template <typename scalar_t>
void blur_range(const LatticeView& lat, int32_t vertex_begin, int32_t vertex_end, int64_t stride, ChannelRange range,
                bool reverse, scalar_t* buffer_a, scalar_t* buffer_b) {
  for (int step = 0; step < lat.d1; ++step) {
    const auto [src, dst] = blur_step_buffers(lat.d1, step, buffer_a, buffer_b);
    blur_axis_range(lat, vertex_begin, vertex_end, stride, range, reverse ? lat.d1 - 1 - step : step, src, dst);
  }
}

// Blurs channels `range` of the span's vertices as blur_range does, in compact rows of only
// those channels in the calling thread's scratch memory, and stores the result in those channels
// of `out`'s rows of `stride` values. load(v, row) writes the range's values of vertex v into
// `row`. Threads that blur different ranges of the same vertices this way share no cache lines
// until the final store; blurring them in place, every row would be written by all of them at
// every axis.
template <typename scalar_t, typename Load>
void blur_compact(const LatticeView& lat, const ItemSpan& span, ChannelRange range, bool reverse, const Load& load,
                  int64_t stride, scalar_t* out) {
  const int64_t width = range.end - range.begin;
  // Rows are indexed by vertex id; the ones before the span are never touched.
  const at::Tensor scratch =
      scratch_buffer(Scratch::kBlurRows, 2 * span.vertex_end * width, c10::CppTypeToScalarType<scalar_t>::value);
  scalar_t* rows_a = scratch.data_ptr<scalar_t>();
  scalar_t* rows_b = rows_a + span.vertex_end * width;
  scalar_t* start = blur_start(lat.d1, rows_a, rows_b);
  for (int32_t v = span.vertex_begin; v < span.vertex_end; ++v) load(v, start + v * width);
  blur_range(lat, span.vertex_begin, span.vertex_end, width, {0, width}, reverse, rows_a, rows_b);
  // A row is a few vectors: copied inline, as a call to memmove per row cost more than the copy.
  with_constant<4, 8, 12, 16, 20, 24>(width, [&](auto constant_width) {
    constexpr int W = decltype(constant_width)::value;
    const int64_t row_width = W > 0 ? W : width;
    for (int32_t v = span.vertex_begin; v < span.vertex_end; ++v) {
      const scalar_t* RRM_RESTRICT from = rows_a + v * row_width;
      scalar_t* RRM_RESTRICT to = out + v * stride + range.begin;
      RRM_SIMD
      for (int64_t c = 0; c < row_width; ++c) to[c] = from[c];
    }
  });
}

// The phases of a filter's stream (one batch item).
enum FilterPhase : int64_t { kSplat, kBlur, kSlice, kFilterPhases };

// lattice_filter over the items of a batch as a plan of phase_runner.h; vertex buffers are
// [M, C] (items share no vertices). Splat chunks are the whole item on one thread, vertex
// ranges of a scatter split among the threads from kScatterChannels channels on, and runs of
// gathered vertices below.
template <typename scalar_t, int CH, bool kUnitStride>
class FilterPlan {
 public:
  FilterPlan(const LatticeView& lat, int64_t points, int64_t items, const scalar_t* values, Channels<CH> ch,
             bool reverse, scalar_t* buffer_a, scalar_t* buffer_b, scalar_t* out, int threads)
      : lat_(lat),
        points_(points),
        values_(values),
        ch_(ch),
        reverse_(reverse),
        buffer_a_(buffer_a),
        buffer_b_(buffer_b),
        out_(out),
        threads_(threads),
        blur_parts_(channel_parts(ch.count(), threads)) {
    for (int64_t item = 0; item < items; ++item) spans_.push_back(item_span(lat, points, item, item + 1));
  }

  int64_t phases() const { return kFilterPhases; }

  int64_t chunks(int64_t item, int64_t phase) const {
    if (phase == kSplat) return scatters() ? threads_ : chunks_of(vertices(item), kVertexChunk);
    if (phase == kBlur) return blur_parts_;
    return chunks_of(points_, kPointChunk);
  }

  void run(int64_t item, int64_t phase, int64_t chunk, int) {
    const ItemSpan& span = spans_[item];
    if (phase == kSplat) return splat(item, span, chunk);
    if (phase == kBlur) return blur(span, chunk);
    const int64_t channels = ch_.count();
    const scalar_t* blurred = buffer_a_;
    const scalar_t alpha = slice_scale<scalar_t>(lat_.d1 - 1);
    const int64_t end = std::min(span.point_end, span.point_begin + (chunk + 1) * kPointChunk);
    for (int64_t p = span.point_begin + chunk * kPointChunk; p < end; ++p) {
      for_channel_blocks(channels, [&](auto block, int64_t c) {
        slice_point<scalar_t, decltype(block)::value>(lat_, p, blurred, channels, c, alpha, out_);
      });
    }
  }

  void finish(int64_t, int64_t) {}

 private:
  bool scatters() const { return threads_ == 1 || ch_.count() >= kScatterChannels; }
  int64_t vertices(int64_t item) const { return spans_[item].vertex_end - spans_[item].vertex_begin; }

  // An item's values: one stretch of channel planes, or rows of a points-last array.
  Values<const scalar_t, kUnitStride> item_values(int64_t item) const {
    if constexpr (kUnitStride) {
      return {values_, points_last(ch_.count())};
    } else {
      return {values_ + item * ch_.count() * points_, {item * points_, 1, points_}};
    }
  }

  // The splat's buffer: where the blur starts (see blur_range), or, when it blurs ranges of
  // channels (blur_compact), buffer_a, from which each range is read and to which it returns.
  scalar_t* splat_buffer() const { return blur_parts_ == 1 ? blur_start(lat_.d1, buffer_a_, buffer_b_) : buffer_a_; }

  void blur(const ItemSpan& span, int64_t part) {
    const int64_t channels = ch_.count();
    if (blur_parts_ == 1) {
      blur_range(lat_, span.vertex_begin, span.vertex_end, channels, {0, channels}, reverse_, buffer_a_, buffer_b_);
      return;
    }
    const ChannelRange range = channel_part(channels, blur_parts_, part);
    const auto load = [&](int32_t v, scalar_t* row) {
      std::copy(buffer_a_ + v * channels + range.begin, buffer_a_ + v * channels + range.end, row);
    };
    blur_compact(lat_, span, range, reverse_, load, channels, buffer_a_);
  }

  void splat(int64_t item, const ItemSpan& span, int64_t chunk) {
    const int64_t channels = ch_.count();
    const Values<const scalar_t, kUnitStride> in = item_values(item);
    if (scatters()) {
      splat_by_scatter(lat_, span, in, ch_, channels, scatter_part_begin(lat_, span, threads_, chunk),
                       scatter_part_begin(lat_, span, threads_, chunk + 1), splat_buffer());
      return;
    }
    const ValueLayout layout = in.known_layout();
    const int64_t end = std::min<int64_t>(span.vertex_end, span.vertex_begin + (chunk + 1) * kVertexChunk);
    RRM_DISPATCH_FEATURE_DIM(lat_.d1 - 1, [&] {
      for (int64_t v = span.vertex_begin + chunk * kVertexChunk; v < end; ++v) {
        for_channel_blocks(channels, [&](auto block, int64_t c) {
          splat_vertex<scalar_t, decltype(block)::value, FEATURE_DIM>(lat_, static_cast<int32_t>(v), in.data, layout,
                                                                      nullptr, channels, c, splat_buffer());
        });
      }
    });
  }

  const LatticeView& lat_;
  const int64_t points_;
  const scalar_t* values_;
  const Channels<CH> ch_;
  const bool reverse_;
  scalar_t* buffer_a_;
  scalar_t* buffer_b_;
  scalar_t* out_;
  const int threads_;
  const int64_t blur_parts_;
  std::vector<ItemSpan> spans_;
};

template <typename scalar_t, int CH, bool kUnitStride>
void run_filter(const LatticeView& lat, int64_t points, int64_t items, const scalar_t* values, Channels<CH> ch,
                bool reverse, scalar_t* buffer_a, scalar_t* buffer_b, scalar_t* out) {
  const int threads = phase_threads(items * points * ch.count(), kValuesPerThread);
  FilterPlan<scalar_t, CH, kUnitStride> plan(lat, points, items, values, ch, reverse, buffer_a, buffer_b, out,
                                             threads);
  run_phases(plan, items, threads);
}

}  // namespace

int filter_threads(const at::Tensor& values) { return phase_threads(values.numel(), kValuesPerThread); }

VertexRange touched_vertices(const LatticeView& lat, int64_t point_begin, int64_t point_end) {
  const int32_t* offsets = lat.offsets + point_begin * lat.d1;
  const int64_t entries = (point_end - point_begin) * lat.d1;
  int32_t lowest = lat.num_vertices, highest = -1;
#pragma omp simd reduction(min : lowest) reduction(max : highest)
  for (int64_t e = 0; e < entries; ++e) {
    lowest = offsets[e] < lowest ? offsets[e] : lowest;
    highest = offsets[e] > highest ? offsets[e] : highest;
  }
  return lowest <= highest ? VertexRange{lowest, highest + 1} : VertexRange{0, 0};
}

void splat_ones(const LatticeView& lat, int32_t vertex_begin, int32_t vertex_end, int64_t stride, float* buffer_a,
                float* buffer_b) {
  // Every point reads the same 1 (a layout with no stride), and w * 1 is w, as for stored ones.
  static constexpr float kOne = 1.f;
  float* start = blur_start(lat.d1, buffer_a, buffer_b);
  for (int32_t v = vertex_begin; v < vertex_end; ++v) {
    splat_vertex<float, 1>(lat, v, &kOne, ValueLayout{0, 0, 0}, nullptr, stride, 0, start);
  }
}

void slice_ones(const LatticeView& lat, int64_t point_begin, int64_t point_end, int64_t stride, const float* buffer_a,
                float* out) {
  const float alpha = slice_scale<float>(lat.d1 - 1);
  for (int64_t p = point_begin; p < point_end; ++p) slice_sums<float, 1>(lat, p, buffer_a, stride, 0, alpha, out + p);
}

void filter_ones(const LatticeView& lat, const ItemSpan& span, int64_t stride, float* buffer_a, float* buffer_b,
                 float* out) {
  splat_ones(lat, span.vertex_begin, span.vertex_end, stride, buffer_a, buffer_b);
  blur_range(lat, span.vertex_begin, span.vertex_end, stride, {0, 1}, false, buffer_a, buffer_b);
  slice_ones(lat, span.point_begin, span.point_end, stride, buffer_a, out);
}

void sum_partials(const LatticeView& lat, float* partial_sums, const VertexRange* ranges, int64_t partials,
                  int64_t stride, int32_t vertex_begin, int32_t vertex_end, float* buffer_a, float* buffer_b) {
  const int64_t partial_stride = static_cast<int64_t>(lat.num_vertices) * stride;
  float* RRM_RESTRICT sum = blur_start(lat.d1, buffer_a, buffer_b);
  const int64_t begin = vertex_begin * stride, end = vertex_end * stride;
  if (partials == 0) std::fill(sum + begin, sum + end, 0.f);
  for (int64_t part = 0; part < partials; ++part) {
    // Array `part` over its range, cut to [vertex_begin, vertex_end), as whole rows.
    const int64_t first = std::clamp<int64_t>(ranges[part].begin * stride, begin, end);
    const int64_t last = std::clamp<int64_t>(ranges[part].end * stride, first, end);
    float* RRM_RESTRICT partial = partial_sums + part * partial_stride;
    if (part == 0) {
      // The first array is added to zero as it is read, rather than to rows zeroed first: one
      // pass less, and the same sums (0 + x, also for x = -0).
      std::fill(sum + begin, sum + first, 0.f);
      std::fill(sum + last, sum + end, 0.f);
      RRM_SIMD
      for (int64_t i = first; i < last; ++i) {
        sum[i] = 0.f + partial[i];
        partial[i] = 0.f;
      }
    } else {
      RRM_SIMD
      for (int64_t i = first; i < last; ++i) {
        sum[i] = sum[i] + partial[i];
        partial[i] = 0.f;
      }
    }
  }
}

void sum_and_blur(const LatticeView& lat, const ItemSpan& span, float* partial_sums, const VertexRange* ranges,
                  int64_t partials, int64_t stride, float* buffer_a, float* buffer_b) {
  sum_partials(lat, partial_sums, ranges, partials, stride, span.vertex_begin, span.vertex_end, buffer_a, buffer_b);
  blur_range(lat, span.vertex_begin, span.vertex_end, stride, {0, stride}, false, buffer_a, buffer_b);
}

void blur_step(const LatticeView& lat, int32_t vertex_begin, int32_t vertex_end, int64_t stride, ChannelRange range,
               int step, float* buffer_a, float* buffer_b) {
  const auto [src, dst] = blur_step_buffers(lat.d1, step, buffer_a, buffer_b);
  blur_axis_range<float>(lat, vertex_begin, vertex_end, stride, range, step, src, dst);
}

at::Tensor filter_cpu(const LatticeTuple& lattice_in, const at::Tensor& values_in, bool reverse) {
  const LatticeTuple lattice = contiguous_lattice(lattice_in);
  check_filter_inputs(lattice, values_in);
  const bool planes = !values_in.is_contiguous() && values_in.transpose(1, 2).is_contiguous();
  const at::Tensor values = planes ? values_in : values_in.contiguous();
  at::Tensor out = empty_filled_buffer(values.sizes(), values.options());
  if (values.numel() == 0) return out;
  const LatticeView lat = make_view(lattice);
  const int64_t items = values.size(0), points = values.size(1), channels = values.size(2);
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "lattice_filter_cpu", [&] {
    at::Tensor buffer_a = at::empty({lat.num_vertices, channels}, values.options());
    at::Tensor buffer_b = at::empty({lat.num_vertices, channels}, values.options());
    const auto run = [&](auto ch) {
      const auto run_layout = [&](auto unit_stride) {
        run_filter<scalar_t, decltype(ch)::kConstant, decltype(unit_stride)::value>(
            lat, points, items, values.data_ptr<scalar_t>(), ch, reverse, buffer_a.data_ptr<scalar_t>(),
            buffer_b.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
      };
      if (planes) {
        run_layout(std::false_type());
      } else {
        run_layout(std::true_type());
      }
    };
    // float64 filtering serves finite-difference checks, not speed: one runtime-channel version.
    if constexpr (std::is_same_v<scalar_t, float>) {
      with_channels(channels, run);
    } else {
      run(Channels<0>{channels});
    }
  });
  return out;
}

}  // namespace lattice
}  // namespace rrm
