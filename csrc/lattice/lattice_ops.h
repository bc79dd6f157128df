// ATen-level entry points of the lattice op family (declared for bindings and other op
// families that reuse a built lattice).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "lattice/lattice.h"

namespace rrm {
namespace lattice {

// offsets, weights, neighbours, splat_ptr, splat_entries, splat_weights (see lattice.h).
using LatticeTuple = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Validates features [B, P, d] and returns them contiguous.
at::Tensor checked_features(const at::Tensor& features);

// Validates the six lattice tensors against values [B, P, C].
void check_filter_inputs(const LatticeTuple& lattice, const at::Tensor& values);

// check_filter_inputs, then values made contiguous.
at::Tensor checked_filter_inputs(const LatticeTuple& lattice, const at::Tensor& values);

// The six lattice tensors made contiguous, as make_view requires.
LatticeTuple contiguous_lattice(const LatticeTuple& lattice);

// Raw pointers into contiguous lattice tensors, which must outlive the view.
LatticeView make_view(const LatticeTuple& lattice);

LatticeTuple lattice_build_cpu(const at::Tensor& features);
at::Tensor lattice_filter_cpu(const at::Tensor& offsets, const at::Tensor& weights, const at::Tensor& neighbours,
                              const at::Tensor& splat_ptr, const at::Tensor& splat_entries,
                              const at::Tensor& splat_weights, const at::Tensor& values, bool reverse);

#ifdef RRM_WITH_CUDA
LatticeTuple lattice_build_cuda(const at::Tensor& features);
#endif

// The points and vertices of the consecutive batch items [item_begin, item_end): an item's
// points are contiguous, and so are its vertices, which are numbered in order of their first
// entry (see lattice.h), so the first vertex of an item is the vertex of its first entry.
struct ItemSpan {
  int64_t point_begin;
  int64_t point_end;
  int32_t vertex_begin;
  int32_t vertex_end;
};

ItemSpan item_span(const LatticeView& lat, int64_t points_per_item, int64_t item_begin, int64_t item_end);

// Filters values [num_points, C] into out for the items of `span` only, with caller-owned
// vertex buffers of [M, C] each, so iterative callers (mean-field) allocate nothing per call.
// values is read only by the splat, so out may be values itself (in-place filtering). Items
// share no vertices, so different spans may be filtered concurrently.
void filter_cpu_into(const LatticeView& lat, const ItemSpan& span, const float* values, int64_t channels, bool reverse,
                     float* buffer_a, float* buffer_b, float* out);
void filter_cpu_into(const LatticeView& lat, const ItemSpan& span, const double* values, int64_t channels, bool reverse,
                     double* buffer_a, double* buffer_b, double* out);

// The splat and blur of filter_cpu_into without the slice, for callers that slice each point
// themselves (the mean field's fused update): splats point_scale[point] * values (see
// splat_vertex; values as they are if point_scale is null) and returns the buffer, a or b,
// holding the blurred vertex values.
const float* splat_blur_cpu_into(const LatticeView& lat, const ItemSpan& span, const float* values,
                                 const float* point_scale, int64_t channels, float* buffer_a, float* buffer_b);

}  // namespace lattice
}  // namespace rrm
