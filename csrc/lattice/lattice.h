// Permutohedral lattice: per-element kernel bodies shared by the CPU and CUDA launchers.
//
// The scheme is the one of Krähenbühl & Koltun's dense CRF code (Adams, Baek, Davis 2010):
// embed, enclosing simplex and barycentric weights in float32, (1/2, 1, 1/2) blur along the
// d+1 lattice directions with missing neighbours counted as zero, and the 1/(1+2^-d) scale.
//
// Layout of a built lattice for a batch of B items with P points of dimension d (D1 = d+1):
//   offsets    int32 [B*P*D1]   global vertex id of entry e = (b*P + p)*D1 + r
//   weights    float [B*P*D1]   barycentric weight of entry e
//   neighbours int32 [D1, M, 2] vertex ids of the two blur neighbours per axis, -1 if absent
//   splat_ptr  int32 [M+1]      CSR row pointers: entries of vertex v are
//   splat_entries int32 [B*P*D1]  splat_entries[splat_ptr[v] .. splat_ptr[v+1]) in ascending order
//   splat_weights float [B*P*D1]  weights[splat_entries[k]], so the splat reads its list in order
// Vertices of one batch item are contiguous and never neighbour another item's vertices.
// Vertex ids are assigned in order of each vertex's first entry, so the lattice tensors are
// identical on every device and thread count.
#pragma once

#include <math.h>
#include <stdint.h>

#include "common/macros.h"

namespace rrm {
namespace lattice {

constexpr int kMaxDim = 16;

// Diagonal of the elevation matrix E times the expected filter std (Adams et al. p.5-6).
struct ElevationScale {
  float value[kMaxDim];
};

inline ElevationScale elevation_scale(int d) {
  ElevationScale scale{};
  const float inv_std_dev = static_cast<float>(sqrt(2.0 / 3.0) * (d + 1));
  for (int i = 0; i < d; ++i) {
    scale.value[i] = static_cast<float>(1.0 / sqrt(static_cast<double>((i + 2) * (i + 1))) * inv_std_dev);
  }
  return scale;
}

// The simplex enclosing one embedded point: its remainder-0 vertex and the rank of each
// coordinate. Vertex r (0..d) of the simplex has the key coordinates
// rem0[i] + r - (rank[i] > d - r ? d + 1 : 0), i < d (simplex_keys).
template <int D>
struct Simplex {
  static constexpr int kCap = (D > 0 ? D : kMaxDim) + 1;
  int32_t rem0[kCap];
  int32_t rank[kCap];
};

// Embeds one feature vector: finds its enclosing simplex and writes the D1 barycentric weights.
// D > 0 fixes d at compile time.
template <int D>
RRM_HOST_DEVICE inline void embed_simplex(const float* feature, int d_runtime, const ElevationScale& scale,
                                          Simplex<D>& simplex, float* weights) {
  const int d = D > 0 ? D : d_runtime;
  const int d1 = d + 1;
  constexpr int kCap = Simplex<D>::kCap;
  int32_t* rem0 = simplex.rem0;
  int32_t* rank = simplex.rank;
  float elevated[kCap];

  float running_sum = 0.f;
  for (int j = d; j > 0; --j) {
    const float cf = feature[j - 1] * scale.value[j - 1];
    elevated[j] = running_sum - j * cf;
    running_sum += cf;
  }
  elevated[0] = running_sum;

  const float down_factor = 1.0f / d1;
  const float up_factor = static_cast<float>(d1);
  int32_t coordinate_sum = 0;
  // diff: each coordinate's offset from its remainder-0 point, which the ranks sort.
  float diff[kCap];
  for (int i = 0; i <= d; ++i) {
    const float v = down_factor * elevated[i];
    const float up = ceilf(v) * up_factor;
    const float down = floorf(v) * up_factor;
    // An integer select: a float one compiles to a branch on the CPU, which mispredicts often.
    const int32_t up_is_nearer = up - elevated[i] < elevated[i] - down ? 1 : 0;
    const int32_t down_int = static_cast<int32_t>(down);
    rem0[i] = down_int + up_is_nearer * (static_cast<int32_t>(up) - down_int);
    coordinate_sum += rem0[i] / d1;
    diff[i] = elevated[i] - static_cast<float>(rem0[i]);
    rank[i] = 0;
  }
  // Counting comparisons (not branching on them) keeps the unpredictable outcomes off the
  // branch predictor; ties rank the lower index after the higher one.
  for (int i = 0; i < d; ++i) {
    for (int j = i + 1; j <= d; ++j) {
      const int32_t less = diff[i] < diff[j] ? 1 : 0;
      rank[i] += less;
      rank[j] += 1 - less;
    }
  }
  // Bring the remainder-0 point back onto the hyperplane (sum 0), then order the offsets by
  // rank. The reference adds each offset v_i to barycentric[d - rank_i] and subtracts it from
  // barycentric[d - rank_i + 1]; the ranks are a permutation of 0..d, so every weight is one
  // difference of two rank-ordered offsets, which float arithmetic gives identically whatever
  // the order of the two updates.
  float by_rank[kCap] = {};
  for (int i = 0; i <= d; ++i) {
    const int32_t shifted = rank[i] + coordinate_sum;
    const int32_t wrap = d1 * ((shifted < 0 ? 1 : 0) - (shifted > d ? 1 : 0));
    rank[i] = shifted + wrap;
    rem0[i] += wrap;
    by_rank[rank[i]] = (elevated[i] - static_cast<float>(rem0[i])) * down_factor;
  }
  // Double precision here reproduces the rounding of the reference implementation.
  weights[0] = static_cast<float>(static_cast<double>(by_rank[d]) + (1.0 + static_cast<double>(-by_rank[0])));
  for (int k = 1; k <= d; ++k) weights[k] = by_rank[d - k] - by_rank[d - k + 1];
}

// Writes the keys (d ints each) of the D1 vertices of a simplex.
template <int D>
RRM_HOST_DEVICE inline void simplex_keys(const Simplex<D>& simplex, int d_runtime, int32_t* keys) {
  const int d = D > 0 ? D : d_runtime;
  for (int r = 0; r <= d; ++r) {
    for (int i = 0; i < d; ++i) {
      keys[r * d + i] = simplex.rem0[i] + r - (simplex.rank[i] > d - r ? d + 1 : 0);
    }
  }
}

// Embeds one feature vector: writes the keys of the D1 enclosing simplex vertices and their
// barycentric weights.
template <int D>
RRM_HOST_DEVICE inline void embed_point(const float* feature, int d_runtime, const ElevationScale& scale,
                                        int32_t* keys, float* weights) {
  Simplex<D> simplex;
  embed_simplex<D>(feature, d_runtime, scale, simplex, weights);
  simplex_keys<D>(simplex, d_runtime, keys);
}

// Capacity (a power of two, load factor <= 1/2) of one batch item's hash table.
inline int64_t hash_table_capacity(int64_t entries_per_item) {
  int64_t capacity = 1024;
  while (capacity < 2 * entries_per_item) capacity <<= 1;
  return capacity;
}

// murmur3's 32-bit finaliser.
RRM_HOST_DEVICE inline uint32_t mix_bits(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

template <int D>
RRM_HOST_DEVICE inline uint32_t hash_key(const int32_t* key, int d_runtime) {
  const int d = D > 0 ? D : d_runtime;
  // A sum of independent products (no serial dependency between coordinates) with pseudo-random
  // odd multipliers (constants when d is), then the finaliser. Multipliers in arithmetic
  // progression collide on the lattice's linearly related keys.
  uint32_t h = 0;
  for (int i = 0; i < d; ++i) {
    h += static_cast<uint32_t>(key[i]) * (mix_bits(0x9e3779b9u * static_cast<uint32_t>(i + 1)) | 1u);
  }
  return mix_bits(h);
}

// All coordinates are compared, then tested once: which coordinate differs first is data-dependent,
// and a branch per coordinate mispredicts often in the CPU build's key lookups.
template <int D>
RRM_HOST_DEVICE inline bool keys_equal(const int32_t* a, const int32_t* b, int d_runtime) {
  const int d = D > 0 ? D : d_runtime;
  int32_t differences = 0;
  for (int i = 0; i < d; ++i) differences |= a[i] ^ b[i];
  return differences == 0;
}

// Inserts entry `entry` (whose key is keys[entry*d ..]) into an open-addressing table of
// entry indices (-1 = empty, capacity mask+1). Returns the slot holding its key. Lock-free:
// slots are only ever claimed, never released, so two entries with the same key always
// meet in the first slot of their common probe sequence that is not taken by another key.
template <int D>
RRM_HOST_DEVICE inline int32_t hash_insert(int32_t* table, uint32_t mask, const int32_t* keys, int d_runtime,
                                           int32_t entry) {
  const int d = D > 0 ? D : d_runtime;
  const int32_t* key = keys + static_cast<int64_t>(entry) * d;
  uint32_t slot = hash_key<D>(key, d) & mask;
  while (true) {
    const int32_t held = atomic_cas_i32(table + slot, -1, entry);
    if (held == -1 || keys_equal<D>(keys + static_cast<int64_t>(held) * d, key, d)) {
      return static_cast<int32_t>(slot);
    }
    slot = (slot + 1) & mask;
  }
}

// Returns the entry that owns `key` in the table, or -1.
template <int D>
RRM_HOST_DEVICE inline int32_t hash_find(const int32_t* table, uint32_t mask, const int32_t* keys, int d_runtime,
                                         const int32_t* key) {
  const int d = D > 0 ? D : d_runtime;
  uint32_t slot = hash_key<D>(key, d) & mask;
  while (true) {
    const int32_t held = table[slot];
    if (held == -1) return -1;
    if (keys_equal<D>(keys + static_cast<int64_t>(held) * d, key, d)) return held;
    slot = (slot + 1) & mask;
  }
}

// Finds the two blur neighbours of the vertex with key `key` along lattice axis `axis`
// (0..d) and writes their vertex ids (or -1). `vertex_of_owner` maps an owner entry to its
// vertex id.
template <int D>
RRM_HOST_DEVICE inline void find_blur_neighbours(const int32_t* table, uint32_t mask, const int32_t* keys,
                                                 int d_runtime, const int32_t* key, int axis,
                                                 const int32_t* vertex_of_owner, int32_t* out_pair) {
  const int d = D > 0 ? D : d_runtime;
  constexpr int kCap = (D > 0 ? D : kMaxDim);
  int32_t minus[kCap];
  int32_t plus[kCap];
  for (int k = 0; k < d; ++k) {
    minus[k] = key[k] - 1;
    plus[k] = key[k] + 1;
  }
  if (axis < d) {
    minus[axis] = key[axis] + d;
    plus[axis] = key[axis] - d;
  }
  const int32_t owner_minus = hash_find<D>(table, mask, keys, d, minus);
  const int32_t owner_plus = hash_find<D>(table, mask, keys, d, plus);
  out_pair[0] = owner_minus < 0 ? -1 : vertex_of_owner[owner_minus];
  out_pair[1] = owner_plus < 0 ? -1 : vertex_of_owner[owner_plus];
}

// Raw view of a built lattice (see the layout at the top of this file).
struct LatticeView {
  const int32_t* offsets;
  const float* weights;
  const int32_t* neighbours;
  const int32_t* splat_ptr;
  const int32_t* splat_entries;
  const float* splat_weights;
  int64_t num_points;  // B*P
  int32_t num_vertices;
  int d1;
};

// Where value (point, channel) of an array of values lives:
// array[(point - first_point) * point_stride + channel * channel_stride]. A points-last array
// ([B, P, C], the layout the filters work in) has (0, C, 1) for the whole batch; one item's
// channel planes of a [B, C, P] array have (b * P, 1, P) against that item's first plane.
struct ValueLayout {
  int64_t first_point;
  int64_t point_stride;
  int64_t channel_stride;

  RRM_HOST_DEVICE int64_t offset(int64_t point, int64_t channel) const {
    return (point - first_point) * point_stride + channel * channel_stride;
  }
};

RRM_HOST_DEVICE inline ValueLayout points_last(int64_t channels) { return {0, channels, 1}; }

// The filter bodies below each handle a block of K consecutive channels [c_begin, c_begin + K)
// and accumulate in registers: CUDA threads take K = 1, CPU loops take blocks of 8 and 4 so the
// compiler keeps whole vectors in registers. Every channel sees the same operations in the same
// order whatever K is, so the results do not depend on the blocking.

// Gather splat of vertex v from values laid out as `layout`, each point's values multiplied by
// point_scale[point] (a global index b*P + p) first unless point_scale is null: contributions
// summed in entry (hence point) order, which makes the result independent of scheduling. The
// scale lets the mean field splat n * Q from Q itself, with the bits of splatting a stored n * Q.
// D > 0 fixes d at compile time (entry -> point division).
template <typename scalar_t, int K, int D = 0>
RRM_HOST_DEVICE RRM_INLINE void splat_vertex(const LatticeView& lat, int32_t v, const scalar_t* values,
                                             const ValueLayout& layout, const scalar_t* point_scale,
                                             int64_t channels, int64_t c_begin, scalar_t* vertex_values) {
  const int d1 = D > 0 ? D + 1 : lat.d1;
  scalar_t sum[K];
  for (int c = 0; c < K; ++c) sum[c] = scalar_t(0);
  for (int32_t k = lat.splat_ptr[v]; k < lat.splat_ptr[v + 1]; ++k) {
    const scalar_t w = static_cast<scalar_t>(lat.splat_weights[k]);
    const int64_t point = lat.splat_entries[k] / d1;
    const scalar_t* in = values + layout.offset(point, c_begin);
    if (point_scale == nullptr) {
      for (int c = 0; c < K; ++c) sum[c] += w * in[c * layout.channel_stride];
    } else {
      const scalar_t scale = point_scale[point];
      for (int c = 0; c < K; ++c) sum[c] += w * (scale * in[c * layout.channel_stride]);
    }
  }
  scalar_t* out = vertex_values + static_cast<int64_t>(v) * channels + c_begin;
  for (int c = 0; c < K; ++c) out[c] = sum[c];
}

// One (1/2, 1, 1/2) blur step of vertex v along `axis`. A missing neighbour reads a row of
// zeros, so the channel loop has no branches; all rows are loaded before the output is stored
// (the compiler cannot rule out that they overlap), which keeps the loop in vector registers.
template <typename scalar_t, int K>
RRM_HOST_DEVICE RRM_INLINE void blur_vertex(const LatticeView& lat, int32_t v, int axis, const scalar_t* src,
                                            int64_t channels, int64_t c_begin, scalar_t* dst) {
  const scalar_t zeros[K] = {};
  const int32_t* pair = lat.neighbours + (static_cast<int64_t>(axis) * lat.num_vertices + v) * 2;
  const scalar_t* self = src + static_cast<int64_t>(v) * channels + c_begin;
  const scalar_t* minus = pair[0] < 0 ? zeros : src + static_cast<int64_t>(pair[0]) * channels + c_begin;
  const scalar_t* plus = pair[1] < 0 ? zeros : src + static_cast<int64_t>(pair[1]) * channels + c_begin;
  scalar_t blurred[K];
  for (int c = 0; c < K; ++c) blurred[c] = self[c] + scalar_t(0.5) * (minus[c] + plus[c]);
  scalar_t* out = dst + static_cast<int64_t>(v) * channels + c_begin;
  for (int c = 0; c < K; ++c) out[c] = blurred[c];
}

// Slice of channels [c_begin, c_begin + K) of point `point` (a global index b*P + p) into out.
template <typename scalar_t, int K>
RRM_HOST_DEVICE RRM_INLINE void slice_sums(const LatticeView& lat, int64_t point, const scalar_t* vertex_values,
                                           int64_t channels, int64_t c_begin, scalar_t alpha, scalar_t* out) {
  scalar_t sum[K];
  for (int c = 0; c < K; ++c) sum[c] = scalar_t(0);
  for (int r = 0; r < lat.d1; ++r) {
    const int64_t entry = point * lat.d1 + r;
    const scalar_t w = static_cast<scalar_t>(lat.weights[entry]);
    const scalar_t* in = vertex_values + static_cast<int64_t>(lat.offsets[entry]) * channels + c_begin;
    for (int c = 0; c < K; ++c) sum[c] += w * in[c] * alpha;
  }
  for (int c = 0; c < K; ++c) out[c] = sum[c];
}

// Slice of point `point` into points-last out_values.
template <typename scalar_t, int K>
RRM_HOST_DEVICE RRM_INLINE void slice_point(const LatticeView& lat, int64_t point, const scalar_t* vertex_values,
                                            int64_t channels, int64_t c_begin, scalar_t alpha, scalar_t* out_values) {
  slice_sums<scalar_t, K>(lat, point, vertex_values, channels, c_begin, alpha, out_values + point * channels + c_begin);
}

template <typename scalar_t>
RRM_HOST_DEVICE inline scalar_t slice_scale(int d) {
  return scalar_t(1) / (scalar_t(1) + scalar_t(pow(2.0, -static_cast<double>(d))));
}

}  // namespace lattice
}  // namespace rrm
