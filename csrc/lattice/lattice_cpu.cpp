// CPU launchers of the lattice op family: at::parallel_for over the bodies of lattice.h.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <utility>

#include "common/checks.h"
#include "common/dispatch.h"
#include "lattice/lattice_ops.h"

namespace rrm {
namespace lattice {
namespace {

constexpr int64_t kPointGrain = 512;
constexpr int64_t kVertexGrain = 256;

template <int D>
void build_cpu(const float* features, int64_t batch, int64_t points, int d, int32_t* offsets, float* weights,
               at::Tensor& neighbours, at::Tensor& splat_ptr, int32_t* splat_entries) {
  const int d1 = d + 1;
  const int64_t per_item = points * d1;
  const int64_t entries = batch * per_item;
  const ElevationScale scale = elevation_scale(d);
  at::Tensor keys_t = at::empty({entries, d}, at::kInt);
  int32_t* keys = keys_t.data_ptr<int32_t>();

  at::parallel_for(0, batch * points, kPointGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      embed_point<D>(features + i * d, d, scale, keys + i * d1 * d, weights + i * d1);
    }
  });

  const int64_t capacity = hash_table_capacity(per_item);
  const uint32_t mask = static_cast<uint32_t>(capacity - 1);
  at::Tensor table_t = at::full({batch * capacity}, -1, at::kInt);
  int32_t* table = table_t.data_ptr<int32_t>();
  at::Tensor slot_t = at::empty({entries}, at::kLong);
  int64_t* slot = slot_t.data_ptr<int64_t>();
  at::parallel_for(0, entries, kPointGrain, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
      const int64_t item = e / per_item;
      slot[e] = item * capacity + hash_insert<D>(table + item * capacity, mask, keys, d, static_cast<int32_t>(e));
    }
  });
  // The smallest entry of each key becomes its owner, so vertex ids do not depend on
  // which thread won the insertion race.
  at::parallel_for(0, entries, kPointGrain, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) atomic_min_i32(table + slot[e], static_cast<int32_t>(e));
  });

  at::Tensor vertex_of_owner_t = at::empty({entries}, at::kInt);
  int32_t* vertex_of_owner = vertex_of_owner_t.data_ptr<int32_t>();
  int32_t vertices = 0;
  for (int64_t e = 0; e < entries; ++e) {
    if (table[slot[e]] == e) vertex_of_owner[e] = vertices++;
  }
  at::Tensor owners_t = at::empty({vertices}, at::kInt);
  int32_t* owners = owners_t.data_ptr<int32_t>();
  at::parallel_for(0, entries, kPointGrain, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
      const int32_t owner = table[slot[e]];
      offsets[e] = vertex_of_owner[owner];
      if (owner == e) owners[offsets[e]] = static_cast<int32_t>(e);
    }
  });

  neighbours = at::empty({d1, vertices, 2}, at::kInt);
  int32_t* pairs = neighbours.data_ptr<int32_t>();
  at::parallel_for(0, vertices, kVertexGrain, [&](int64_t begin, int64_t end) {
    for (int64_t v = begin; v < end; ++v) {
      const int32_t owner = owners[v];
      const int64_t item = owner / per_item;
      for (int axis = 0; axis < d1; ++axis) {
        find_blur_neighbours<D>(table + item * capacity, mask, keys, d, keys + static_cast<int64_t>(owner) * d, axis,
                                vertex_of_owner, pairs + (static_cast<int64_t>(axis) * vertices + v) * 2);
      }
    }
  });

  // Counting sort of entries by vertex; a stable pass keeps each vertex's list in point order.
  splat_ptr = at::zeros({static_cast<int64_t>(vertices) + 1}, at::kInt);
  int32_t* ptr = splat_ptr.data_ptr<int32_t>();
  for (int64_t e = 0; e < entries; ++e) ++ptr[offsets[e] + 1];
  for (int32_t v = 0; v < vertices; ++v) ptr[v + 1] += ptr[v];
  at::Tensor cursor_t = splat_ptr.slice(0, 0, vertices).clone();
  int32_t* cursor = cursor_t.data_ptr<int32_t>();
  for (int64_t e = 0; e < entries; ++e) splat_entries[cursor[offsets[e]]++] = static_cast<int32_t>(e);
}

}  // namespace

template <typename scalar_t>
void filter_cpu_into(const LatticeView& lat, const scalar_t* values, int64_t channels, bool reverse,
                     scalar_t* buffer_a, scalar_t* buffer_b, scalar_t* out) {
  const int32_t vertices = lat.num_vertices;
  at::parallel_for(0, vertices, kVertexGrain, [&](int64_t begin, int64_t end) {
    for (int64_t v = begin; v < end; ++v) splat_vertex(lat, static_cast<int32_t>(v), values, channels, 0, channels, buffer_a);
  });
  scalar_t* src = buffer_a;
  scalar_t* dst = buffer_b;
  for (int step = 0; step < lat.d1; ++step) {
    const int axis = reverse ? lat.d1 - 1 - step : step;
    at::parallel_for(0, vertices, kVertexGrain, [&](int64_t begin, int64_t end) {
      for (int64_t v = begin; v < end; ++v) blur_vertex(lat, static_cast<int32_t>(v), axis, src, channels, 0, channels, dst);
    });
    std::swap(src, dst);
  }
  const scalar_t alpha = slice_scale<scalar_t>(lat.d1 - 1);
  at::parallel_for(0, lat.num_points, kPointGrain, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) slice_point(lat, p, src, channels, 0, channels, alpha, out);
  });
}

template void filter_cpu_into<float>(const LatticeView&, const float*, int64_t, bool, float*, float*, float*);
template void filter_cpu_into<double>(const LatticeView&, const double*, int64_t, bool, double*, double*, double*);

LatticeTuple lattice_build_cpu(const at::Tensor& features_in) {
  const at::Tensor features = checked_features(features_in);
  const int64_t batch = features.size(0);
  const int64_t points = features.size(1);
  const int d = static_cast<int>(features.size(2));
  at::Tensor offsets = at::empty({batch, points, d + 1}, at::kInt);
  at::Tensor weights = at::empty({batch, points, d + 1}, at::kFloat);
  at::Tensor splat_entries = at::empty({batch * points * (d + 1)}, at::kInt);
  at::Tensor neighbours;
  at::Tensor splat_ptr;
  RRM_DISPATCH_FEATURE_DIM(d, [&] {
    build_cpu<FEATURE_DIM>(features.data_ptr<float>(), batch, points, d, offsets.data_ptr<int32_t>(),
                           weights.data_ptr<float>(), neighbours, splat_ptr, splat_entries.data_ptr<int32_t>());
  });
  return {offsets, weights, neighbours, splat_ptr, splat_entries};
}

at::Tensor lattice_filter_cpu(const at::Tensor& offsets, const at::Tensor& weights, const at::Tensor& neighbours,
                              const at::Tensor& splat_ptr, const at::Tensor& splat_entries, const at::Tensor& values_in,
                              bool reverse) {
  const at::Tensor values =
      checked_filter_inputs(offsets, weights, neighbours, splat_ptr, splat_entries, values_in);
  at::Tensor out = at::empty_like(values);
  if (values.numel() == 0) return out;
  const at::Tensor o = offsets.contiguous(), w = weights.contiguous(), n = neighbours.contiguous(),
                   p = splat_ptr.contiguous(), s = splat_entries.contiguous();
  const LatticeView lat = make_view(o, w, n, p, s);
  const int64_t channels = values.size(2);
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "lattice_filter_cpu", [&] {
    at::Tensor buffer_a = at::empty({lat.num_vertices, channels}, values.options());
    at::Tensor buffer_b = at::empty({lat.num_vertices, channels}, values.options());
    filter_cpu_into<scalar_t>(lat, values.data_ptr<scalar_t>(), channels, reverse, buffer_a.data_ptr<scalar_t>(),
                              buffer_b.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
  });
  return out;
}

TORCH_LIBRARY_IMPL(rrm_ops, CPU, m) {
  m.impl("lattice_build", &lattice_build_cpu);
  m.impl("lattice_filter", &lattice_filter_cpu);
}

}  // namespace lattice
}  // namespace rrm
