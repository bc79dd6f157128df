// ATen-level entry points of the lattice op family (declared for bindings and other op
// families that reuse a built lattice).
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <tuple>

#include "lattice/lattice.h"

namespace rrm {
namespace lattice {

// offsets, weights, neighbours, splat_ptr, splat_entries, splat_weights (see lattice.h).
using LatticeTuple = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
constexpr size_t kLatticeTensors = std::tuple_size_v<LatticeTuple>;

// The lattice an op takes as its Tensor[] argument `name` (lattice_build's outputs in their
// order); refuses a list of another length.
LatticeTuple lattice_of(at::TensorList tensors, const char* name);

// The lattice as the Tensor[] argument of an op call through the dispatcher.
std::array<at::Tensor, kLatticeTensors> as_tensor_list(const LatticeTuple& lattice);

// Refuses a lattice tensor off `reference`'s device, naming it `<name>_<part>` (bilateral_splat_ptr)
// or, for an empty name, `<part>` (splat_ptr). The CUDA glue's device check (check_one_device).
void check_lattice_device(const LatticeTuple& lattice, const char* name, const at::Tensor& reference,
                          const char* reference_name);

// Validates features [B, P, d] and returns them contiguous. Their values are checked finite
// here on the host only: a device build reads that check with its vertex count.
at::Tensor checked_features(const at::Tensor& features);

// Validates the six lattice tensors against values [B, P, C].
void check_filter_inputs(const LatticeTuple& lattice, const at::Tensor& values);

// check_filter_inputs, then values made contiguous.
at::Tensor checked_filter_inputs(const LatticeTuple& lattice, const at::Tensor& values);

// The six lattice tensors made contiguous, as make_view requires.
LatticeTuple contiguous_lattice(const LatticeTuple& lattice);

// Raw pointers into contiguous lattice tensors, which must outlive the view.
LatticeView make_view(const LatticeTuple& lattice);

// The zero-feature points lattice_build adds to each item of `points` points to make their
// count a multiple of point_block (>= 1, checked).
int64_t padding_points(int64_t points, int64_t point_block);

// A lattice built over items of points + padding points, the last `padding` of each item being
// padding points, without those points' entries: their vertices stay (see lattice_build).
LatticeTuple without_padding_entries(const LatticeTuple& padded, int64_t points, int64_t padding);

LatticeTuple lattice_build_cpu(const at::Tensor& features, int64_t point_block);
// lattice_build_cpu with the lattice tensors in this thread's scratch memory (see
// scratch_buffer): they hold the lattice until the thread's next transient build, so they must
// not outlive the call that asked for them. Saves faulting in fresh memory for a lattice used
// once, as the dense CRF's bilateral lattice is.
LatticeTuple lattice_build_transient_cpu(const at::Tensor& features, int64_t point_block);
at::Tensor lattice_filter_cpu(at::TensorList lattice, const at::Tensor& values, bool reverse);

#ifdef RRM_WITH_CUDA
LatticeTuple lattice_build_cuda(const at::Tensor& features, int64_t point_block);
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

}  // namespace lattice
}  // namespace rrm
