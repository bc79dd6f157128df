// Device-independent parts of the lattice ops: argument validation, and the padding points of
// lattice_build's point_block.
#include <string>
#include <utility>

#include "common/checks.h"
#include "common/device.h"
#include "lattice/lattice_ops.h"

namespace rrm {
namespace lattice {

LatticeTuple lattice_of(at::TensorList tensors, const char* name) {
  TORCH_CHECK_VALUE(tensors.size() == kLatticeTensors, name, " must hold the ", kLatticeTensors,
                    " tensors of a lattice (offsets, weights, neighbours, splat_ptr, splat_entries, splat_weights), "
                    "as lattice_build returns them, got ", tensors.size());
  return {tensors[0], tensors[1], tensors[2], tensors[3], tensors[4], tensors[5]};
}

std::array<at::Tensor, kLatticeTensors> as_tensor_list(const LatticeTuple& lattice) {
  return std::apply([](const auto&... tensors) { return std::array<at::Tensor, kLatticeTensors>{tensors...}; },
                    lattice);
}

void check_lattice_device(const LatticeTuple& lattice, const char* name, const at::Tensor& reference,
                          const char* reference_name) {
  static constexpr std::array<const char*, kLatticeTensors> kParts{"offsets",   "weights",       "neighbours",
                                                                   "splat_ptr", "splat_entries", "splat_weights"};
  const std::array<at::Tensor, kLatticeTensors> tensors = as_tensor_list(lattice);
  for (size_t i = 0; i < kLatticeTensors; ++i) {
    const std::string part = *name == '\0' ? kParts[i] : std::string(name) + "_" + kParts[i];
    check_same_device(tensors[i], part.c_str(), reference, reference_name);
  }
}

at::Tensor checked_features(const at::Tensor& features) {
  check_dim(features, 3, "features", "[B, P, d]");
  check_dtype(features, at::kFloat, "features");
  const int64_t d = features.size(2);
  TORCH_CHECK(d >= 1 && d <= kMaxDim, "features must have a feature dimension d in 1..", kMaxDim, ", got d = ", d);
  TORCH_CHECK(features.size(0) * features.size(1) * (d + 1) < (int64_t{1} << 30),
              "features has too many points for int32 lattice indices: shape ", shape_of(features));
  if (is_host(features.device())) check_finite(features, "features");
  return features.contiguous();
}

int64_t padding_points(int64_t points, int64_t point_block) {
  TORCH_CHECK(point_block >= 1, "point_block must be >= 1, got ", point_block);
  return (point_block - points % point_block) % point_block;
}

LatticeTuple without_padding_entries(const LatticeTuple& padded, int64_t points, int64_t padding) {
  const int64_t d1 = std::get<0>(padded).size(2);
  const int64_t padded_points = points + padding;
  // Entry e of the padded build belongs to point e / D1 of item point / (P + padding); the kept
  // entries are renumbered as over P points, in the same order.
  const at::Tensor entries = std::get<4>(padded).to(at::kLong);
  const at::Tensor point = entries.div(d1, "floor");
  const at::Tensor item = point.div(padded_points, "floor");
  const at::Tensor item_point = point - item * padded_points;
  const at::Tensor kept = item_point < points;
  const at::Tensor renumbered = (item * points + item_point) * d1 + (entries - point * d1);
  const at::Tensor kept_through = kept.to(at::kLong).cumsum(0);
  // The kept count is known, so the kept entries are gathered (the j-th is the first entry
  // through which j + 1 are kept) rather than masked out, which would read it on the host.
  const int64_t kept_count = std::get<0>(padded).size(0) * points * d1;
  const at::Tensor kept_entry = at::searchsorted(kept_through, at::arange(kept_count, kept_through.options()),
                                                 /*out_int32=*/false, /*right=*/true);
  const at::Tensor kept_before = at::cat({at::zeros({1}, entries.options()), kept_through});
  return {std::get<0>(padded).slice(1, 0, points).contiguous(),
          std::get<1>(padded).slice(1, 0, points).contiguous(),
          std::get<2>(padded),
          kept_before.index_select(0, std::get<3>(padded).to(at::kLong)).to(at::kInt).contiguous(),
          renumbered.index_select(0, kept_entry).to(at::kInt).contiguous(),
          std::get<5>(padded).index_select(0, kept_entry).contiguous()};
}

at::Tensor checked_filter_inputs(const LatticeTuple& lattice, const at::Tensor& values) {
  check_filter_inputs(lattice, values);
  return values.contiguous();
}

void check_filter_inputs(const LatticeTuple& lattice, const at::Tensor& values) {
  const auto& [offsets, weights, neighbours, splat_ptr, splat_entries, splat_weights] = lattice;
  check_dim(offsets, 3, "offsets", "[B, P, d+1]");
  check_dim(values, 3, "values", "[B, P, C]");
  check_floating(values, "values");
  check_dtype(offsets, at::kInt, "offsets");
  check_dtype(weights, at::kFloat, "weights");
  check_dtype(neighbours, at::kInt, "neighbours");
  check_dtype(splat_ptr, at::kInt, "splat_ptr");
  check_dtype(splat_entries, at::kInt, "splat_entries");
  check_dtype(splat_weights, at::kFloat, "splat_weights");
  TORCH_CHECK(values.size(0) == offsets.size(0) && values.size(1) == offsets.size(1),
              "values must be [B, P, C] with B and P of the lattice (", offsets.size(0), ", ", offsets.size(1),
              "), got shape ", shape_of(values));
  TORCH_CHECK(weights.sizes() == offsets.sizes(), "weights must have the shape of offsets ", shape_of(offsets),
              ", got ", shape_of(weights));
  TORCH_CHECK(splat_ptr.dim() == 1 && splat_ptr.size(0) >= 1, "splat_ptr must be 1-D [M+1]");
  const int64_t vertices = splat_ptr.size(0) - 1;
  TORCH_CHECK(neighbours.dim() == 3 && neighbours.size(0) == offsets.size(2) && neighbours.size(1) == vertices &&
                  neighbours.size(2) == 2,
              "neighbours must be [d+1, M, 2] = [", offsets.size(2), ", ", vertices, ", 2], got ",
              shape_of(neighbours));
  for (const auto& [t, name] :
       {std::pair{&splat_entries, "splat_entries"}, std::pair{&splat_weights, "splat_weights"}}) {
    TORCH_CHECK(t->dim() == 1 && t->numel() == offsets.numel(), name, " must be 1-D with B*P*(d+1) = ",
                offsets.numel(), " elements, got ", shape_of(*t));
  }
  for (const auto* t : {&weights, &neighbours, &splat_ptr, &splat_entries, &splat_weights}) {
    check_same_device(*t, "lattice tensors", offsets, "offsets");
  }
  check_same_device(values, "values", offsets, "the lattice");
}

LatticeTuple contiguous_lattice(const LatticeTuple& lattice) {
  return std::apply([](const auto&... tensors) { return LatticeTuple{tensors.contiguous()...}; }, lattice);
}

LatticeView make_view(const LatticeTuple& lattice) {
  const auto& [offsets, weights, neighbours, splat_ptr, splat_entries, splat_weights] = lattice;
  LatticeView view;
  view.offsets = offsets.data_ptr<int32_t>();
  view.weights = weights.data_ptr<float>();
  view.neighbours = neighbours.data_ptr<int32_t>();
  view.splat_ptr = splat_ptr.data_ptr<int32_t>();
  view.splat_entries = splat_entries.data_ptr<int32_t>();
  view.splat_weights = splat_weights.data_ptr<float>();
  view.num_points = offsets.size(0) * offsets.size(1);
  view.num_vertices = static_cast<int32_t>(splat_ptr.size(0) - 1);
  view.d1 = static_cast<int>(offsets.size(2));
  return view;
}

ItemSpan item_span(const LatticeView& lat, int64_t points_per_item, int64_t item_begin, int64_t item_end) {
  const auto first_vertex = [&](int64_t point) {
    return point < lat.num_points ? lat.offsets[point * lat.d1] : lat.num_vertices;
  };
  ItemSpan span;
  span.point_begin = item_begin * points_per_item;
  span.point_end = item_end * points_per_item;
  span.vertex_begin = first_vertex(span.point_begin);
  span.vertex_end = first_vertex(span.point_end);
  return span;
}

}  // namespace lattice
}  // namespace rrm
