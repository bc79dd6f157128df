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

// Open-addressing table of distinct keys, numbered in order of first insertion. The keys are
// kept densely in id order, so tables stay small (a few vertices per many entries) and
// cache-resident, and the id order doubles as the list of keys.
template <int D>
class KeyTable {
 public:
  KeyTable(int d, int64_t expected_keys) : d_(D > 0 ? D : d) {
    int64_t capacity = 256;
    while (capacity < 2 * expected_keys) capacity <<= 1;
    slots_.assign(capacity, -1);
  }

  int32_t size() const { return static_cast<int32_t>(keys_.size() / d_); }
  const int32_t* key(int32_t id) const { return keys_.data() + static_cast<int64_t>(id) * d_; }

  int32_t find(const int32_t* key) const {
    for (uint32_t slot = home(key);; slot = next(slot)) {
      const int32_t id = slots_[slot];
      if (id < 0 || keys_equal<D>(this->key(id), key, d_)) return id;
    }
  }

  int32_t find_or_insert(const int32_t* key) {
    uint32_t slot = home(key);
    for (; slots_[slot] >= 0; slot = next(slot)) {
      if (keys_equal<D>(this->key(slots_[slot]), key, d_)) return slots_[slot];
    }
    const int32_t id = size();
    slots_[slot] = id;
    keys_.insert(keys_.end(), key, key + d_);
    if (2 * keys_.size() > slots_.size() * d_) grow();
    return id;
  }

 private:
  uint32_t home(const int32_t* key) const { return hash_key<D>(key, d_) & mask(); }
  uint32_t next(uint32_t slot) const { return (slot + 1) & mask(); }
  uint32_t mask() const { return static_cast<uint32_t>(slots_.size() - 1); }

  void grow() {
    slots_.assign(2 * slots_.size(), -1);
    for (int32_t id = 0; id < size(); ++id) {
      uint32_t slot = home(key(id));
      while (slots_[slot] >= 0) slot = next(slot);
      slots_[slot] = id;
    }
  }

  int d_;
  std::vector<int32_t> slots_;
  std::vector<int32_t> keys_;
};

// A run of consecutive points of one batch item, deduplicated on its own. Several chunks per
// item let the threads share a single image; the merge below makes the result independent of
// the chunking.
template <int D>
struct Chunk {
  int64_t item;
  int64_t first_point;
  int64_t last_point;
  KeyTable<D> table;
  std::vector<int32_t> vertex_of_local;
};

template <int D>
std::vector<Chunk<D>> make_chunks(int d, int64_t batch, int64_t points) {
  std::vector<Chunk<D>> chunks;
  if (batch * points == 0) return chunks;
  const int64_t threads = at::get_num_threads();
  const int64_t pieces = std::max<int64_t>(1, std::min((threads + batch - 1) / batch, points / kPointGrain));
  const int64_t piece_points = (points + pieces - 1) / pieces;
  for (int64_t item = 0; item < batch; ++item) {
    for (int64_t first = 0; first < points; first += piece_points) {
      const int64_t begin = item * points + first;
      const int64_t end = item * points + std::min(points, first + piece_points);
      chunks.push_back({item, begin, end, KeyTable<D>(d, (end - begin) * (d + 1) / 8), {}});
    }
  }
  return chunks;
}

// Embeds the chunk's points and numbers their distinct keys in the chunk's table, writing the
// chunk-local ids into offsets. A point whose simplex vertex repeats the previous point's
// (common: neighbouring pixels share simplices) skips the table.
template <int D>
void embed_chunk(const float* features, int d, const ElevationScale& scale, Chunk<D>& chunk, int32_t* offsets,
                 float* weights) {
  const int d1 = d + 1;
  int32_t keys[2][(kMaxDim + 1) * kMaxDim];
  for (int64_t point = chunk.first_point; point < chunk.last_point; ++point) {
    const int32_t* previous = keys[(point - 1) & 1];
    int32_t* current = keys[point & 1];
    embed_point<D>(features + point * d, d, scale, current, weights + point * d1);
    int32_t* ids = offsets + point * d1;
    for (int r = 0; r < d1; ++r) {
      const int32_t* key = current + r * d;
      const bool repeats = point > chunk.first_point && keys_equal<D>(key, previous + r * d, d);
      ids[r] = repeats ? ids[r - d1] : chunk.table.find_or_insert(key);
    }
  }
}

// Numbers the distinct keys of one item in order of first entry: chunks in point order, and
// within a chunk its keys in order of first insertion, which is the same order. Returns the
// item's table, whose ids are the item's vertex ids less the item's first vertex.
template <int D>
KeyTable<D> merge_item(int d, std::vector<Chunk<D>*>& item_chunks) {
  int64_t local_keys = 0;
  for (const Chunk<D>* chunk : item_chunks) local_keys += chunk->table.size();
  KeyTable<D> table(d, local_keys);
  for (Chunk<D>* chunk : item_chunks) {
    chunk->vertex_of_local.resize(chunk->table.size());
    for (int32_t id = 0; id < chunk->table.size(); ++id) {
      chunk->vertex_of_local[id] = table.find_or_insert(chunk->table.key(id));
    }
  }
  return table;
}

// Writes the blur neighbours of the vertices [first_vertex, first_vertex + table.size()) of one
// item, looked up in the item's table.
template <int D>
void find_item_neighbours(const KeyTable<D>& table, int d, int32_t first_vertex, int32_t vertices,
                          int32_t* neighbours) {
  const auto vertex_of = [&](const int32_t* key) {
    const int32_t id = table.find(key);
    return id < 0 ? -1 : first_vertex + id;
  };
  at::parallel_for(0, table.size(), kVertexGrain, [&](int64_t begin, int64_t end) {
    int32_t minus[kMaxDim];
    int32_t plus[kMaxDim];
    for (int64_t id = begin; id < end; ++id) {
      for (int axis = 0; axis <= d; ++axis) {
        blur_neighbour_keys<D>(table.key(static_cast<int32_t>(id)), d, axis, minus, plus);
        int32_t* pair = neighbours + (static_cast<int64_t>(axis) * vertices + first_vertex + id) * 2;
        pair[0] = vertex_of(minus);
        pair[1] = vertex_of(plus);
      }
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
  const ElevationScale scale = elevation_scale(d);
  std::vector<Chunk<D>> chunks = make_chunks<D>(d, batch, points);
  at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) embed_chunk<D>(features, d, scale, chunks[c], offsets, weights);
  });

  std::vector<std::vector<Chunk<D>*>> chunks_of_item(batch);
  for (Chunk<D>& chunk : chunks) chunks_of_item[chunk.item].push_back(&chunk);
  std::vector<KeyTable<D>> tables;
  tables.reserve(batch);
  for (int64_t item = 0; item < batch; ++item) tables.push_back(merge_item<D>(d, chunks_of_item[item]));
  std::vector<int32_t> first_vertex(batch + 1, 0);
  for (int64_t item = 0; item < batch; ++item) first_vertex[item + 1] = first_vertex[item] + tables[item].size();
  const int32_t vertices = first_vertex[batch];

  at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const Chunk<D>& chunk = chunks[c];
      for (int64_t e = chunk.first_point * d1; e < chunk.last_point * d1; ++e) {
        offsets[e] = first_vertex[chunk.item] + chunk.vertex_of_local[offsets[e]];
      }
    }
  });
  neighbours = at::empty({d1, vertices, 2}, at::kInt);
  for (int64_t item = 0; item < batch; ++item) {
    find_item_neighbours<D>(tables[item], d, first_vertex[item], vertices, neighbours.data_ptr<int32_t>());
  }
  splat_ptr = at::empty({static_cast<int64_t>(vertices) + 1}, at::kInt);
  build_splat_csr(offsets, batch * points * d1, vertices, splat_ptr.data_ptr<int32_t>(), splat_entries);
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
