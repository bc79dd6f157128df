// Device-independent parts of the lattice ops: argument validation, the record of the lattices
// this library built, and the padding points of lattice_build's point_block.
#include <c10/core/StorageImpl.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

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

double max_feature_magnitude(int d) {
  TORCH_CHECK_VALUE(d >= 1 && d <= kMaxDim, "the feature dimension d must be in 1..", kMaxDim, ", got ", d);
  // elevated[j] = sum_{k > j} s_k f_k - j s_j f_j (1-based, s the elevation scale) and
  // elevated[0] = sum_k s_k f_k, so |elevated[j]| <= max|f| times the largest coefficient sum.
  const ElevationScale scale = elevation_scale(d);
  double suffix = 0, largest = 0;
  for (int j = d; j >= 1; --j) {
    largest = std::max(largest, suffix + j * static_cast<double>(scale.value[j - 1]));
    suffix += scale.value[j - 1];
  }
  largest = std::max(largest, suffix);
  return std::floor(static_cast<double>(int64_t{1} << 23) / largest);
}

void check_feature_magnitude(double magnitude, int d) {
  TORCH_CHECK_VALUE(magnitude <= max_feature_magnitude(d), "features has a coordinate of magnitude ", magnitude,
                    ", beyond the lattice's range: at d = ", d, " every |feature| must be at most ",
                    static_cast<int64_t>(max_feature_magnitude(d)),
                    " (rrm_ops.lattice.max_feature_magnitude); a standard deviation the features were divided by "
                    "is too small for their range");
}

at::Tensor checked_features(const at::Tensor& features, int64_t point_block) {
  check_dim(features, 3, "features", "[B, P, d]");
  check_dtype(features, at::kFloat, "features");
  const int64_t d = features.size(2);
  TORCH_CHECK(d >= 1 && d <= kMaxDim, "features must have a feature dimension d in 1..", kMaxDim, ", got d = ", d);
  const int64_t padded = features.size(1) + padding_points(features.size(1), point_block);
  // Vertices are at most entries, so this bounds both.
  TORCH_CHECK(features.size(0) * padded * (d + 1) < kMaxEntries,
              "features has too many points for int32 lattice indices: shape ", shape_of(features),
              (padded > features.size(1) ? " padded to a multiple of point_block" : ""), " makes ",
              features.size(0) * padded * (d + 1), " entries, at most ", kMaxEntries - 1);
  if (is_host(features.device()) && features.numel() > 0) {
    const Extremes extremes = extremes_of(features);
    TORCH_CHECK_VALUE(std::isfinite(extremes.minimum) && std::isfinite(extremes.maximum),
                      "features contains NaN or infinite values");
    check_feature_magnitude(std::max(-extremes.minimum, extremes.maximum), static_cast<int>(d));
  }
  return features.contiguous();
}

namespace {

// What identifies one tensor of a built lattice: its storage (held weakly, which keeps the
// StorageImpl's address from being reused while the record lasts), where it starts, its sizes and
// its version. Inference tensors have no version counter.
struct TensorStamp {
  c10::weak_intrusive_ptr<c10::StorageImpl> storage;
  const void* data;
  std::vector<int64_t> sizes;
  std::optional<uint32_t> version;

  explicit TensorStamp(const at::Tensor& t)
      : storage(t.storage().getWeakStorageImpl()),
        data(t.const_data_ptr()),
        sizes(t.sizes().vec()),
        version(t.unsafeGetTensorImpl()->version_counter().enabled()
                    ? std::optional<uint32_t>(t.unsafeGetTensorImpl()->version_counter().current_version())
                    : std::nullopt) {}

  bool same_storage(const TensorStamp& other) const {
    return storage._unsafe_get_target() == other.storage._unsafe_get_target();
  }

  bool matches(const at::Tensor& t) const {
    if (!t.has_storage() || storage.expired() ||
        storage._unsafe_get_target() != t.storage().unsafeGetStorageImpl() || data != t.const_data_ptr() ||
        t.sizes() != at::IntArrayRef(sizes)) {
      return false;
    }
    const c10::VariableVersion& counter = t.unsafeGetTensorImpl()->version_counter();
    return counter.enabled() ? version == counter.current_version() : !version.has_value();
  }
};

using LatticeStamp = std::array<TensorStamp, std::tuple_size_v<LatticeTuple>>;

LatticeStamp stamp_of(const LatticeTuple& lattice) {
  return std::apply([](const auto&... tensors) { return LatticeStamp{TensorStamp(tensors)...}; }, lattice);
}

// The stamps of the lattices built most recently, at most kCapacity; a lattice that has fallen
// out is scanned like any other. A build whose six tensors lie in the storages of an earlier
// record (a transient build reusing its thread's scratch memory) replaces that record.
class BuiltLattices {
 public:
  void add(const LatticeTuple& lattice) {
    LatticeStamp stamp = stamp_of(lattice);
    const std::lock_guard<std::mutex> lock(mutex_);
    stamps_.erase(std::remove_if(stamps_.begin(), stamps_.end(),
                                 [&](const LatticeStamp& old) {
                                   bool expired = false, same = true;
                                   for (size_t k = 0; k < old.size(); ++k) {
                                     expired = expired || old[k].storage.expired();
                                     same = same && old[k].same_storage(stamp[k]);
                                   }
                                   return expired || same;
                                 }),
                  stamps_.end());
    stamps_.push_back(std::move(stamp));
    if (stamps_.size() > kCapacity) stamps_.pop_front();
  }

  bool contains(const LatticeTuple& lattice) {
    const std::lock_guard<std::mutex> lock(mutex_);
    return std::any_of(stamps_.begin(), stamps_.end(), [&](const LatticeStamp& stamp) {
      return std::apply(
          [&](const auto&... tensors) {
            size_t k = 0;
            return (stamp[k++].matches(tensors) && ...);
          },
          lattice);
    });
  }

 private:
  static constexpr size_t kCapacity = 256;
  std::mutex mutex_;
  std::deque<LatticeStamp> stamps_;
};

BuiltLattices& built_lattices() {
  static BuiltLattices lattices;
  return lattices;
}

// The scan of check_lattice_indices: every condition a tensor of bools reduced to one element,
// all read at once.
void scan_lattice_indices(const LatticeTuple& lattice) {
  const auto& [offsets, weights, neighbours, splat_ptr, splat_entries, splat_weights] = lattice;
  const int64_t batch = offsets.size(0), entries = offsets.numel();
  const int64_t vertices = splat_ptr.size(0) - 1;
  const at::Tensor ptr = splat_ptr.reshape({-1});
  std::vector<std::pair<at::Tensor, const char*>> conditions;
  conditions.emplace_back(
      (ptr[0] == 0) & (ptr[vertices] == entries) & (ptr.slice(0, 1) >= ptr.slice(0, 0, vertices)).all(),
      "splat_ptr must start at 0, never decrease and end at the entry count B*P*(d+1)");
  if (entries == 0) {
    conditions.emplace_back(((neighbours >= -1) & (neighbours < vertices)).all(),
                            "neighbours must hold vertex ids in 0..M-1 or -1");
  } else {
    // Item b's vertices are [first[b], end[b]): from the vertex of its first entry to that of
    // the next item's first entry (see lattice.h).
    const at::Tensor item_offsets = offsets.reshape({batch, -1});
    const at::Tensor first = item_offsets.select(1, 0).contiguous();
    const at::Tensor end = at::cat({first.slice(0, 1), at::full({1}, vertices, first.options())});
    conditions.emplace_back((first[0] == 0) & (item_offsets >= first.unsqueeze(1)).all() &
                                (item_offsets < end.unsqueeze(1)).all(),
                            "offsets must hold vertex ids in 0..M-1, from 0 on, each batch item's a range of its "
                            "own after the previous item's");
    const at::Tensor item = (at::searchsorted(first, at::arange(vertices, first.options()), /*out_int32=*/false,
                                              /*right=*/true) -
                             1)
                                .clamp(0, batch - 1);
    const at::Tensor low = first.index_select(0, item).view({1, vertices, 1});
    const at::Tensor high = end.index_select(0, item).view({1, vertices, 1});
    conditions.emplace_back(((neighbours == -1) | ((neighbours >= low) & (neighbours < high))).all(),
                            "neighbours must hold -1 or vertex ids of the same batch item");
    const at::Tensor listed = splat_entries.reshape({-1});
    conditions.emplace_back(((listed >= 0) & (listed < entries)).all(),
                            "splat_entries must hold entry ids in 0..B*P*(d+1)-1");
    // The vertex whose list holds position k: how many lists after the first start at or
    // before k, given splat_ptr as checked above.
    const at::Tensor starts = ptr.slice(0, 1, std::max<int64_t>(vertices, 1)).clamp(0, entries);
    const at::Tensor owner = at::zeros({entries + 1}, ptr.options())
                                 .index_add_(0, starts, at::ones_like(starts))
                                 .cumsum(0)
                                 .slice(0, 0, entries);
    const at::Tensor entry = listed.clamp(0, entries - 1);
    conditions.emplace_back(
        (offsets.reshape({-1}).index_select(0, entry) == owner).all() &
            ((owner.slice(0, 1) != owner.slice(0, 0, entries - 1)) |
             (listed.slice(0, 1) > listed.slice(0, 0, entries - 1)))
                .all(),
        "splat_entries must list each vertex's entries (those whose offset is the vertex) in ascending order");
    conditions.emplace_back((weights.reshape({-1}).view(at::kInt).index_select(0, entry) ==
                             splat_weights.reshape({-1}).view(at::kInt))
                                .all(),
                            "splat_weights must be the weights of splat_entries' entries");
  }
  std::vector<at::Tensor> flags;
  for (const auto& condition : conditions) flags.push_back(condition.first);
  const std::vector<double> read = scalars_on_host(flags);
  for (size_t k = 0; k < read.size(); ++k) {
    TORCH_CHECK_VALUE(read[k] != 0, "lattice: ", conditions[k].second,
                      " (a lattice from lattice_build passes; this one was modified or made otherwise)");
  }
}

}  // namespace

void record_built_lattice(const LatticeTuple& lattice) { built_lattices().add(lattice); }

void check_lattice_indices(const LatticeTuple& lattice) {
  if (!built_lattices().contains(lattice)) scan_lattice_indices(lattice);
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
  TORCH_CHECK_VALUE(offsets.size(2) >= 2 && offsets.size(2) <= kMaxDim + 1,
                    "offsets must be [B, P, d+1] with d in 1..", kMaxDim, ", got shape ", shape_of(offsets));
  TORCH_CHECK_VALUE(offsets.numel() < kMaxEntries && vertices < kMaxEntries,
                    "the lattice has too many entries or vertices for int32 indices: offsets ", shape_of(offsets),
                    ", splat_ptr ", shape_of(splat_ptr));
  check_lattice_indices(lattice);
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
