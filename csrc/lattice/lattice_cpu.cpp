// CPU launchers of the lattice op family: at::parallel_for over the bodies of lattice.h.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/checks.h"
#include "common/dispatch.h"
#include "lattice/lattice_ops.h"

namespace rrm {
namespace lattice {
namespace {

constexpr int64_t kPointGrain = 512;
constexpr int64_t kVertexGrain = 256;
// Points are visited in fixed blocks processed in order, so that a point whose simplex vertex
// repeats the previous point's (common: neighbouring pixels share simplices) can reuse its
// slot without touching the hash table. Fixed blocks keep the result thread-count independent.
constexpr int64_t kBlockPoints = 256;

// Entries of one lattice build on the CPU, with the block structure described above.
struct CpuBuild {
  int d;
  int d1;
  int64_t points;     // per item
  int64_t total_points;
  int64_t capacity;   // hash slots per item
  int32_t* keys;      // [E, d]
  int32_t* table;     // [B * capacity] entry ids
  int32_t* slot;      // [E] slot within the item's table

  int64_t blocks() const { return (total_points + kBlockPoints - 1) / kBlockPoints; }
  int32_t* item_table(int64_t point) const { return table + (point / points) * capacity; }
  // True when entry (point, r) has the same vertex as (point - 1, r) of the same block and item.
  bool continues_run(int64_t point, int r) const {
    const int64_t e = point * d1 + r;
    return point % kBlockPoints != 0 && point % points != 0 && slot[e] == slot[e - d1];
  }
  template <typename Visit>
  void for_each_block(Visit visit) const {
    at::parallel_for(0, blocks(), 1, [&](int64_t begin, int64_t end) {
      for (int64_t block = begin; block < end; ++block) {
        const int64_t last = std::min(total_points, (block + 1) * kBlockPoints);
        for (int64_t point = block * kBlockPoints; point < last; ++point) visit(block, point);
      }
    });
  }
};

template <int D>
void insert_points(const CpuBuild& b) {
  const uint32_t mask = static_cast<uint32_t>(b.capacity - 1);
  b.for_each_block([&](int64_t, int64_t point) {
    for (int r = 0; r < b.d1; ++r) {
      const int64_t e = point * b.d1 + r;
      const bool same_key = point % kBlockPoints != 0 && point % b.points != 0 &&
                            keys_equal<D>(b.keys + e * b.d, b.keys + (e - b.d1) * b.d, b.d);
      b.slot[e] = same_key ? b.slot[e - b.d1]
                           : hash_insert<D>(b.item_table(point), mask, b.keys, b.d, static_cast<int32_t>(e));
    }
  });
}

// Elects the smallest entry of each key as its owner and numbers the owners in entry order,
// so vertex ids never depend on which thread won an insertion race. Returns the vertex count.
int32_t number_vertices(const CpuBuild& b, int32_t* vertex_of_owner, at::Tensor& owners_t) {
  b.for_each_block([&](int64_t, int64_t point) {
    for (int r = 0; r < b.d1; ++r) {
      if (!b.continues_run(point, r)) {
        const int64_t e = point * b.d1 + r;
        atomic_min_i32(b.item_table(point) + b.slot[e], static_cast<int32_t>(e));
      }
    }
  });
  auto is_owner = [&](int64_t point, int r) {
    const int64_t e = point * b.d1 + r;
    return !b.continues_run(point, r) && b.item_table(point)[b.slot[e]] == e;
  };
  std::vector<int32_t> block_first(b.blocks() + 1, 0);
  b.for_each_block([&](int64_t block, int64_t point) {
    for (int r = 0; r < b.d1; ++r) block_first[block + 1] += is_owner(point, r);
  });
  for (int64_t block = 0; block < b.blocks(); ++block) block_first[block + 1] += block_first[block];
  const int32_t vertices = block_first[b.blocks()];
  owners_t = at::empty({vertices}, at::kInt);
  int32_t* owners = owners_t.data_ptr<int32_t>();
  std::vector<int32_t> next(block_first.begin(), block_first.end() - 1);
  b.for_each_block([&](int64_t block, int64_t point) {
    for (int r = 0; r < b.d1; ++r) {
      if (is_owner(point, r)) {
        const int64_t e = point * b.d1 + r;
        vertex_of_owner[e] = next[block];
        owners[next[block]++] = static_cast<int32_t>(e);
      }
    }
  });
  return vertices;
}

void assign_offsets(const CpuBuild& b, const int32_t* vertex_of_owner, int32_t* offsets) {
  b.for_each_block([&](int64_t, int64_t point) {
    for (int r = 0; r < b.d1; ++r) {
      const int64_t e = point * b.d1 + r;
      offsets[e] = b.continues_run(point, r) ? offsets[e - b.d1] : vertex_of_owner[b.item_table(point)[b.slot[e]]];
    }
  });
}

// CSR of entries per vertex by a counting sort over fixed chunks of entries: each chunk counts
// its entries per vertex, a prefix over (vertex, chunk) gives each chunk its place in every
// vertex's list, and each chunk fills its places in entry order, so every list is ascending
// without sorting. The result does not depend on the chunking.
void build_splat_csr(const int32_t* offsets, int64_t entries, int32_t vertices, int32_t* ptr,
                     int32_t* splat_entries) {
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), entries / kPointGrain));
  const int64_t chunk_size = (entries + chunks - 1) / chunks;
  std::vector<int32_t> cursor(chunks * vertices, 0);
  const auto for_each_chunk = [&](auto visit) {
    at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        visit(cursor.data() + c * vertices, c * chunk_size, std::min(entries, (c + 1) * chunk_size));
      }
    });
  };
  for_each_chunk([&](int32_t* count, int64_t first, int64_t last) {
    for (int64_t e = first; e < last; ++e) ++count[offsets[e]];
  });
  int32_t running = 0;
  for (int32_t v = 0; v < vertices; ++v) {
    ptr[v] = running;
    for (int64_t c = 0; c < chunks; ++c) {
      const int32_t count = cursor[c * vertices + v];
      cursor[c * vertices + v] = running;
      running += count;
    }
  }
  ptr[vertices] = running;
  for_each_chunk([&](int32_t* next, int64_t first, int64_t last) {
    for (int64_t e = first; e < last; ++e) splat_entries[next[offsets[e]]++] = static_cast<int32_t>(e);
  });
}

template <int D>
void build_cpu(const float* features, int64_t batch, int64_t points, int d, int32_t* offsets, float* weights,
               at::Tensor& neighbours, at::Tensor& splat_ptr, int32_t* splat_entries) {
  const int d1 = d + 1;
  const int64_t entries = batch * points * d1;
  const ElevationScale scale = elevation_scale(d);
  at::Tensor keys_t = at::empty({entries, d}, at::kInt);
  at::Tensor slot_t = at::empty({entries}, at::kInt);
  const int64_t capacity = hash_table_capacity(points * d1);
  at::Tensor table_t = at::full({batch * capacity}, -1, at::kInt);
  const CpuBuild b{d, d1, points, batch * points, capacity, keys_t.data_ptr<int32_t>(), table_t.data_ptr<int32_t>(),
                   slot_t.data_ptr<int32_t>()};

  at::parallel_for(0, b.total_points, kPointGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) embed_point<D>(features + i * d, d, scale, b.keys + i * d1 * d, weights + i * d1);
  });
  insert_points<D>(b);
  at::Tensor vertex_of_owner_t = at::empty({entries}, at::kInt);
  int32_t* vertex_of_owner = vertex_of_owner_t.data_ptr<int32_t>();
  at::Tensor owners_t;
  const int32_t vertices = number_vertices(b, vertex_of_owner, owners_t);
  assign_offsets(b, vertex_of_owner, offsets);

  const int32_t* owners = owners_t.data_ptr<int32_t>();
  const uint32_t mask = static_cast<uint32_t>(capacity - 1);
  neighbours = at::empty({d1, vertices, 2}, at::kInt);
  int32_t* pairs = neighbours.data_ptr<int32_t>();
  at::parallel_for(0, vertices, kVertexGrain, [&](int64_t begin, int64_t end) {
    for (int64_t v = begin; v < end; ++v) {
      const int32_t owner = owners[v];
      for (int axis = 0; axis < d1; ++axis) {
        find_blur_neighbours<D>(b.item_table(owner / d1), mask, b.keys, d, b.keys + static_cast<int64_t>(owner) * d,
                                axis, vertex_of_owner, pairs + (static_cast<int64_t>(axis) * vertices + v) * 2);
      }
    }
  });

  splat_ptr = at::empty({static_cast<int64_t>(vertices) + 1}, at::kInt);
  build_splat_csr(offsets, entries, vertices, splat_ptr.data_ptr<int32_t>(), splat_entries);
}


// Calls body(std::integral_constant<int, K>(), c_begin) over the channels in blocks of K = 8,
// then 4, then 1 (see the note on blocks in lattice.h).
template <typename Body>
void for_channel_blocks(int64_t channels, const Body& body) {
  int64_t c = 0;
  for (; c + 8 <= channels; c += 8) body(std::integral_constant<int, 8>(), c);
  for (; c + 4 <= channels; c += 4) body(std::integral_constant<int, 4>(), c);
  for (; c < channels; ++c) body(std::integral_constant<int, 1>(), c);
}

// Splat by scattering the points in order. Each vertex then receives its contributions in
// ascending entry order, starting from zero, exactly the sum splat_vertex gathers, so the result
// is bitwise the same; but the values are read once and in order while the writes go to the
// vertex buffer, which is small and stays in cache. Unlike the gather it cannot be split
// between threads.
template <typename scalar_t>
void splat_by_scatter(const LatticeView& lat, const ItemSpan& span, const scalar_t* values, int64_t channels,
                      scalar_t* vertex_values) {
  std::fill(vertex_values + span.vertex_begin * channels, vertex_values + span.vertex_end * channels, scalar_t(0));
  for (int64_t point = span.point_begin; point < span.point_end; ++point) {
    const scalar_t* in = values + point * channels;
    for (int64_t e = point * lat.d1; e < (point + 1) * lat.d1; ++e) {
      const scalar_t w = static_cast<scalar_t>(lat.weights[e]);
      scalar_t* vertex = vertex_values + static_cast<int64_t>(lat.offsets[e]) * channels;
      for_channel_blocks(channels, [&](auto block, int64_t c) {
        constexpr int K = decltype(block)::value;
        scalar_t sum[K];
        for (int k = 0; k < K; ++k) sum[k] = vertex[c + k] + w * in[c + k];
        for (int k = 0; k < K; ++k) vertex[c + k] = sum[k];
      });
    }
  }
}

template <typename scalar_t>
void splat_by_gather(const LatticeView& lat, const ItemSpan& span, const scalar_t* values, int64_t channels,
                     scalar_t* vertex_values) {
  RRM_DISPATCH_FEATURE_DIM(lat.d1 - 1, [&] {
    at::parallel_for(span.vertex_begin, span.vertex_end, kVertexGrain, [&](int64_t begin, int64_t end) {
      for (int64_t v = begin; v < end; ++v) {
        for_channel_blocks(channels, [&](auto block, int64_t c) {
          splat_vertex<scalar_t, decltype(block)::value, FEATURE_DIM>(lat, static_cast<int32_t>(v), values, channels,
                                                                      c, vertex_values);
        });
      }
    });
  });
}

}  // namespace

template <typename scalar_t>
void filter_cpu_into(const LatticeView& lat, const ItemSpan& span, const scalar_t* values, int64_t channels,
                     bool reverse, scalar_t* buffer_a, scalar_t* buffer_b, scalar_t* out) {
  if (at::get_num_threads() == 1 || at::in_parallel_region()) {
    splat_by_scatter(lat, span, values, channels, buffer_a);
  } else {
    splat_by_gather(lat, span, values, channels, buffer_a);
  }
  scalar_t* src = buffer_a;
  scalar_t* dst = buffer_b;
  for (int step = 0; step < lat.d1; ++step) {
    const int axis = reverse ? lat.d1 - 1 - step : step;
    at::parallel_for(span.vertex_begin, span.vertex_end, kVertexGrain, [&](int64_t begin, int64_t end) {
      for (int64_t v = begin; v < end; ++v) {
        for_channel_blocks(channels, [&](auto block, int64_t c) {
          blur_vertex<scalar_t, decltype(block)::value>(lat, static_cast<int32_t>(v), axis, src, channels, c, dst);
        });
      }
    });
    std::swap(src, dst);
  }
  const scalar_t alpha = slice_scale<scalar_t>(lat.d1 - 1);
  at::parallel_for(span.point_begin, span.point_end, kPointGrain, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      for_channel_blocks(channels, [&](auto block, int64_t c) {
        slice_point<scalar_t, decltype(block)::value>(lat, p, src, channels, c, alpha, out);
      });
    }
  });
}

template void filter_cpu_into<float>(const LatticeView&, const ItemSpan&, const float*, int64_t, bool, float*, float*,
                                      float*);
template void filter_cpu_into<double>(const LatticeView&, const ItemSpan&, const double*, int64_t, bool, double*,
                                       double*, double*);

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
  const LatticeTuple lattice = contiguous_lattice({offsets, weights, neighbours, splat_ptr, splat_entries});
  const LatticeView lat = make_view(lattice);
  const int64_t channels = values.size(2);
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "lattice_filter_cpu", [&] {
    at::Tensor buffer_a = at::empty({lat.num_vertices, channels}, values.options());
    at::Tensor buffer_b = at::empty({lat.num_vertices, channels}, values.options());
    filter_cpu_into<scalar_t>(lat, item_span(lat, values.size(1), 0, values.size(0)), values.data_ptr<scalar_t>(),
                              channels, reverse, buffer_a.data_ptr<scalar_t>(), buffer_b.data_ptr<scalar_t>(),
                              out.data_ptr<scalar_t>());
  });
  return out;
}

TORCH_LIBRARY_IMPL(rrm_ops, CPU, m) {
  m.impl("lattice_build", &lattice_build_cpu);
  m.impl("lattice_filter", &lattice_filter_cpu);
}

}  // namespace lattice
}  // namespace rrm
