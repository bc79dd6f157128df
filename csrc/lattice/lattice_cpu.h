// CPU kernels of the lattice family: the build and filter behind the ops (lattice_cpu.cpp
// registers them), and the pieces of the filter that the CPU mean field runs itself (it
// splats the stripes of an image into partial sums, see crf.h). Each piece runs on the calling
// thread; its callers run them as chunks of their own phase runs (phase_runner.h).
#pragma once

#include "lattice/lattice_ops.h"

namespace rrm {
namespace lattice {

// lattice_build on features [B, P, d]; transient as for lattice_build_transient_cpu.
LatticeTuple build_cpu(const at::Tensor& features, int64_t point_block, bool transient);
// The threads for a build over `features` [B, P, d] (phase_threads).
int build_threads(const at::Tensor& features);

// lattice_filter of values [B, P, C], points-last or (as a [B, C, H, W] tensor viewed as
// [B, P, C] is) a stack of channel planes, into a points-last [B, P, C] tensor.
at::Tensor filter_cpu(const LatticeTuple& lattice, const at::Tensor& values, bool reverse);
// The threads for a filter of `values` [B, P, C] (phase_threads).
int filter_threads(const at::Tensor& values);

// Channels [begin, end) of vertex rows.
struct ChannelRange {
  int64_t begin;
  int64_t end;
};


// The vertices [begin, end) by id that the entries of points [point_begin, point_end) lie in
// ({0, 0} if none).
struct VertexRange {
  int32_t begin;
  int32_t end;
};
VertexRange touched_vertices(const LatticeView& lat, int64_t point_begin, int64_t point_end);

// The filter of the constant 1 at the span's points into out[point] (a global index b*P + p),
// using channel 0 of the span's rows of `stride` floats in buffer_a and buffer_b.
void filter_ones(const LatticeView& lat, const ItemSpan& span, int64_t stride, float* buffer_a, float* buffer_b,
                 float* out);
// filter_ones in pieces, for threads that share it by ranges: the splat of vertices
// [vertex_begin, vertex_end) into the buffer the blur starts from, the blur's steps over
// channel {0, 1} (blur_step), and the slice of points [point_begin, point_end).
void splat_ones(const LatticeView& lat, int32_t vertex_begin, int32_t vertex_end, int64_t stride, float* buffer_a,
                float* buffer_b);
void slice_ones(const LatticeView& lat, int64_t point_begin, int64_t point_end, int64_t stride, const float* buffer_a,
                float* out);

// The span's rows of `stride` floats in buffer_a: the sum of the `partials` arrays
// [partials, M, stride] at partial_sums, added in array order to zero, blurred as the filter
// blurs (using buffer_b). Array k is read over its `ranges[k]` only (it must be zero outside)
// and zeroed as it is read, ready for the next splat.
void sum_and_blur(const LatticeView& lat, const ItemSpan& span, float* partial_sums, const VertexRange* ranges,
                  int64_t partials, int64_t stride, float* buffer_a, float* buffer_b);

// sum_and_blur in pieces, for threads that share one lattice's blur by vertex ranges: the sums
// of vertices [vertex_begin, vertex_end) into the buffer the blur starts from, then each step
// (axis) of the blur over such ranges (channels `range`), every range of a step after every
// range of the one before; after step d, the values sum_and_blur leaves in buffer_a.
void sum_partials(const LatticeView& lat, float* partial_sums, const VertexRange* ranges, int64_t partials,
                  int64_t stride, int32_t vertex_begin, int32_t vertex_end, float* buffer_a, float* buffer_b);
void blur_step(const LatticeView& lat, int32_t vertex_begin, int32_t vertex_end, int64_t stride, ChannelRange range,
               int step, float* buffer_a, float* buffer_b);

}  // namespace lattice
}  // namespace rrm
