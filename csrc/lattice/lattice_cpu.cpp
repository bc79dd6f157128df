// CPU launchers of the lattice op family: at::parallel_for over the bodies of lattice.h.
//
// The build works on fixed blocks of consecutive points of one batch item, so that every
// result is the same for any thread count:
//   1. Per block, in parallel: embed each point (embed_simplex) and give each entry the index of
//      its key among the block's distinct keys. Neighbouring points share many simplex
//      vertices, always at the same rank, so many entries are resolved by comparing with the
//      previous point's entry of that rank; the rest go through a small block-local table. Keys
//      are packed into 64-bit words there when their coordinates fit (PackedKeys).
//   2. Insert the blocks' distinct keys into their item's table (hash_insert) and elect the
//      smallest of each key its owner (atomic_min_i32). The table is sized by the distinct
//      count, a small multiple of the vertex count, so it stays in cache; sizing it by the
//      entry count made every probe a cache miss.
//   3. Number the owners in block order, which is the order of each vertex's first entry as on
//      CUDA, map every entry to its vertex, find the blur neighbours (find_blur_neighbours) and
//      build the splat CSR by a counting sort.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/buffers.h"
#include "common/checks.h"
#include "common/dispatch.h"
#include "common/library.h"
#include "lattice/lattice_ops.h"

namespace rrm {
namespace lattice {
namespace {

constexpr int64_t kPointGrain = 512;
constexpr int64_t kVertexGrain = 256;
constexpr int64_t kBlockPoints = 2048;
constexpr int64_t kEntryGrain = 4096;

// The blocks of a build: each batch item's points, with its padding points after them (see
// lattice_build's point_block), cut into runs of kBlockPoints (the last one shorter). Block
// point indices count the padding; entries, features and weights exist for real points only.
// A block's distinct keys get the ids [block * capacity, block * capacity + count).
struct Blocks {
  int64_t points;           // real points per item
  int64_t padded;           // points per item with the padding
  int64_t per_item;         // blocks per item
  int64_t count;            // blocks in all
  int64_t capacity;         // distinct keys a block can hold: its largest entry count
  int d;
  int d1;

  Blocks(int64_t batch, int64_t points_per_item, int64_t padding, int dim)
      : points(points_per_item),
        padded(points_per_item + padding),
        per_item((padded + kBlockPoints - 1) / kBlockPoints),
        count(batch * per_item),
        capacity(std::min(padded, kBlockPoints) * (dim + 1)),
        d(dim),
        d1(dim + 1) {}

  int64_t item(int64_t block) const { return block / per_item; }
  int64_t first_point(int64_t block) const { return item(block) * padded + (block % per_item) * kBlockPoints; }
  int64_t end_point(int64_t block) const {
    return std::min((item(block) + 1) * padded, first_point(block) + kBlockPoints);
  }
  // The real-point index of block point `point`, or -1 for a padding point.
  int64_t real_point(int64_t point) const {
    const int64_t it = point / padded, local = point - it * padded;
    return local < points ? it * points + local : -1;
  }
  // The real points [begin, end) among the block's points.
  std::pair<int64_t, int64_t> real_points(int64_t block) const {
    const int64_t first = first_point(block), end = end_point(block);
    const int64_t item_end = item(block) * padded + points;
    return {real_point(first) < 0 ? 0 : real_point(first),
            first >= item_end ? 0 : real_point(std::min(end, item_end) - 1) + 1};
  }
  template <typename Visit>
  void for_each(Visit visit) const {
    at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
      for (int64_t block = begin; block < end; ++block) visit(block);
    });
  }
};

// Open-addressing table from a block's keys to their index among its distinct keys, grown
// (and rehashed) to keep the load factor at or below 1/2. Used by one thread at a time.
template <int D>
class BlockKeyTable {
 public:
  explicit BlockKeyTable(int d) : d_(d), slots_(kInitialSlots, -1) {}

  // Index of `key` among the distinct keys [0, count) stored at `distinct` (d ints each),
  // appending it (and counting it) when new.
  int32_t find_or_add(const int32_t* key, int32_t* distinct, int32_t& count) {
    uint32_t slot = hash_key<D>(key, d_) & mask();
    while (true) {
      const int32_t held = slots_[slot];
      if (held < 0) break;
      if (keys_equal<D>(distinct + static_cast<int64_t>(held) * d_, key, d_)) return held;
      slot = (slot + 1) & mask();
    }
    const int32_t index = count++;
    std::memcpy(distinct + static_cast<int64_t>(index) * d_, key, sizeof(int32_t) * d_);
    slots_[slot] = index;
    if (2 * static_cast<int64_t>(count) > static_cast<int64_t>(slots_.size())) grow(distinct, count);
    return index;
  }

  // Empties the table for the next block by clearing only the slots the block used.
  void clear(const int32_t* distinct, int32_t count) {
    for (int32_t index = 0; index < count; ++index) slots_[slot_of(distinct, index)] = -1;
  }

 private:
  static constexpr size_t kInitialSlots = 4096;

  uint32_t mask() const { return static_cast<uint32_t>(slots_.size() - 1); }
  uint32_t slot_of(const int32_t* distinct, int32_t index) const {
    uint32_t slot = hash_key<D>(distinct + static_cast<int64_t>(index) * d_, d_) & mask();
    while (slots_[slot] != index) slot = (slot + 1) & mask();
    return slot;
  }
  void grow(const int32_t* distinct, int32_t count) {
    slots_.assign(2 * slots_.size(), -1);
    for (int32_t index = 0; index < count; ++index) {
      uint32_t slot = hash_key<D>(distinct + static_cast<int64_t>(index) * d_, d_) & mask();
      while (slots_[slot] >= 0) slot = (slot + 1) & mask();
      slots_[slot] = index;
    }
  }

  int d_;
  std::vector<int32_t> slots_;
};

// The keys of step 1 as rows of d ints, for any d and coordinate range: the current point's
// D1 keys and the previous point's, and a BlockKeyTable.
template <int D>
class RowKeys {
 public:
  explicit RowKeys(int d) : d_(d), rows_(2 * (d + 1) * d), table_(d) {}

  // Takes the keys of the next point's simplex; always representable.
  bool next_point(const Simplex<D>& simplex) {
    current_ ^= 1;
    simplex_keys<D>(simplex, d_, key(current_, 0));
    return true;
  }
  bool same_as_previous(int r) { return keys_equal<D>(key(current_, r), key(current_ ^ 1, r), d_); }
  int32_t find_or_add(int r, int32_t* distinct, int32_t& count) {
    return table_.find_or_add(key(current_, r), distinct, count);
  }
  void clear(const int32_t* distinct, int32_t count) { table_.clear(distinct, count); }

 private:
  int32_t* key(int row, int r) { return rows_.data() + (static_cast<int64_t>(row) * (d_ + 1) + r) * d_; }

  int d_;
  int current_ = 0;
  std::vector<int32_t> rows_;
  BlockKeyTable<D> table_;
};

// The keys of step 1 packed into one 64-bit word each, kBits = 64 / D bits per coordinate
// (offset by half their range), for D > 0 and points whose coordinates fit: one comparison and
// one multiplicative hash per key instead of D of each, and the D1 keys of a point follow from
// each other by one addition. The distinct indices depend only on the order in which keys first
// appear, not on how they are compared, so they are those of RowKeys.
template <int D>
class PackedKeys {
  static_assert(D > 0, "packed keys need a constant dimension");
  static constexpr int kBits = 64 / D;
  static constexpr int64_t kBias = int64_t{1} << (kBits - 1);
  static constexpr uint64_t kFieldMask = (uint64_t{1} << (kBits - 1) << 1) - 1;
  // From key r - 1 to key r, every coordinate grows by one except the one of rank d - r + 1,
  // which also drops by D1 (see Simplex): steps[c] is that change when coordinate c drops
  // (c = D, which keys leave out, drops none).
  struct Steps {
    uint64_t value[D + 1];
  };
  static constexpr Steps steps() {
    uint64_t ones = 0;
    for (int i = 0; i < D; ++i) ones |= uint64_t{1} << (kBits * i);
    Steps steps{};
    for (int c = 0; c <= D; ++c) steps.value[c] = ones - (c < D ? uint64_t{D + 1} << (kBits * c) : 0);
    return steps;
  }

 public:
  PackedKeys() : slots_(kInitialSlots, Slot{0, -1}) {}

  // Takes the keys of the next point's simplex; false if a coordinate does not fit.
  bool next_point(const Simplex<D>& simplex) {
    current_ ^= 1;
    uint64_t key = 0;
    int coordinate_of_rank[D + 1];
    for (int i = 0; i <= D; ++i) coordinate_of_rank[simplex.rank[i]] = i;
    for (int i = 0; i < D; ++i) {
      // The keys' coordinates lie within rem0 - d .. rem0 + d (see Simplex): inside the field.
      if (simplex.rem0[i] < D + 1 - kBias || simplex.rem0[i] >= kBias - (D + 1)) return false;
      key |= static_cast<uint64_t>(simplex.rem0[i] + kBias) << (kBits * i);
    }
    uint64_t* keys = keys_[current_];
    keys[0] = key;
    static constexpr Steps kSteps = steps();
    for (int r = 1; r <= D; ++r) {
      key += kSteps.value[coordinate_of_rank[D - r + 1]];
      keys[r] = key;
    }
    return true;
  }
  bool same_as_previous(int r) const { return keys_[current_][r] == keys_[current_ ^ 1][r]; }

  // As BlockKeyTable::find_or_add for key r of the current point.
  int32_t find_or_add(int r, int32_t* distinct, int32_t& count) {
    const uint64_t key = keys_[current_][r];
    uint32_t slot = slot_of(key);
    for (; slots_[slot].index >= 0; slot = (slot + 1) & mask()) {
      if (slots_[slot].key == key) return slots_[slot].index;
    }
    const int32_t index = count++;
    for (int i = 0; i < D; ++i) {
      distinct[static_cast<int64_t>(index) * D + i] =
          static_cast<int32_t>(static_cast<int64_t>((key >> (kBits * i)) & kFieldMask) - kBias);
    }
    slots_[slot] = {key, index};
    used_.push_back(slot);
    if (2 * used_.size() > slots_.size()) grow();
    return index;
  }

  // Empties the table for the next block.
  void clear(const int32_t*, int32_t) {
    for (const uint32_t slot : used_) slots_[slot].index = -1;
    used_.clear();
  }

 private:
  struct Slot {
    uint64_t key;
    int32_t index;  // -1: empty
  };
  static constexpr size_t kInitialSlots = 4096;

  uint32_t mask() const { return static_cast<uint32_t>(slots_.size() - 1); }
  // Fibonacci hashing: the top bits of the key times 2^64 / golden ratio.
  uint32_t slot_of(uint64_t key) const {
    return static_cast<uint32_t>((key * 0x9e3779b97f4a7c15ull) >> 32) & mask();
  }
  void grow() {
    std::vector<Slot> held;
    for (const uint32_t slot : used_) held.push_back(slots_[slot]);
    slots_.assign(2 * slots_.size(), Slot{0, -1});
    used_.clear();
    for (const Slot& entry : held) {
      uint32_t slot = slot_of(entry.key);
      while (slots_[slot].index >= 0) slot = (slot + 1) & mask();
      slots_[slot] = entry;
      used_.push_back(slot);
    }
  }

  uint64_t keys_[2][D + 1];
  int current_ = 0;
  std::vector<Slot> slots_;
  std::vector<uint32_t> used_;
};

// Step 1 for one block with one key representation: writes the weights, each entry's
// distinct-key index (into offsets, to be replaced by its vertex id in step 3) and the block's
// distinct keys, counting them in count. A padding point has zero features; its keys are
// added, its entries not written. False (the block unfinished) if keys cannot represent a point.
template <int D, typename Keys>
bool embed_block_with(const Blocks& blocks, int64_t block, const float* features, const ElevationScale& scale,
                      Keys& keys, float* weights, int32_t* offsets, int32_t* distinct, int32_t& count) {
  const int d = D > 0 ? D : blocks.d, d1 = d + 1;
  const float zeros[kMaxDim] = {};
  int32_t index[kMaxDim + 1];
  float padding_weights[kMaxDim + 1];
  const int64_t first = blocks.first_point(block), end = blocks.end_point(block);
  for (int64_t point = first; point < end; ++point) {
    const int64_t real = blocks.real_point(point);
    float* point_weights = real < 0 ? padding_weights : weights + real * d1;
    Simplex<D> simplex;
    embed_simplex<D>(real < 0 ? zeros : features + real * d, d, scale, simplex, point_weights);
    if (!keys.next_point(simplex)) return false;
    // Neighbouring points often share simplex vertices, always at the same rank.
    for (int r = 0; r < d1; ++r) {
      index[r] = point > first && keys.same_as_previous(r) ? index[r] : keys.find_or_add(r, distinct, count);
      if (real >= 0) offsets[real * d1 + r] = index[r];
    }
  }
  return true;
}

// The block-local key tables of one thread: packed keys where D is a constant, rows otherwise
// and for blocks whose coordinates do not fit the packing.
template <int D>
struct BlockKeys {
  explicit BlockKeys(int d) : rows(d) {}
  PackedKeys<D> packed;
  RowKeys<D> rows;
};

template <>
struct BlockKeys<0> {
  explicit BlockKeys(int d) : rows(d) {}
  RowKeys<0> rows;
};

// Step 1 for one block (see embed_block_with); returns the count of its distinct keys.
template <int D>
int32_t embed_block(const Blocks& blocks, int64_t block, const float* features, const ElevationScale& scale,
                    BlockKeys<D>& keys, float* weights, int32_t* offsets, int32_t* distinct) {
  int32_t count = 0;
  if constexpr (D > 0) {
    const bool packed =
        embed_block_with<D>(blocks, block, features, scale, keys.packed, weights, offsets, distinct, count);
    keys.packed.clear(distinct, count);
    if (packed) return count;
    count = 0;
  }
  embed_block_with<D>(blocks, block, features, scale, keys.rows, weights, offsets, distinct, count);
  keys.rows.clear(distinct, count);
  return count;
}

// The state of one CPU build; distinct-key arrays are indexed by distinct id (see Blocks).
struct CpuBuild {
  Blocks blocks;
  int64_t table_capacity = 0;      // slots per item
  int32_t* distinct_keys = nullptr;     // [ids, d]
  int32_t* distinct_count = nullptr;    // [blocks]
  int32_t* distinct_slot = nullptr;     // [ids] slot of the key in its item's table
  int32_t* vertex_of_distinct = nullptr;  // [ids] vertex id, written for owners
  int32_t* table = nullptr;             // [B * table_capacity] distinct ids

  int64_t id(int64_t block, int32_t index) const { return block * blocks.capacity + index; }
  int32_t* item_table(int64_t block) const { return table + blocks.item(block) * table_capacity; }
  uint32_t mask() const { return static_cast<uint32_t>(table_capacity - 1); }
  bool is_owner(int64_t block, int32_t index) const {
    return item_table(block)[distinct_slot[id(block, index)]] == id(block, index);
  }
};

template <int D>
void insert_distinct_keys(const CpuBuild& b) {
  b.blocks.for_each([&](int64_t block) {
    int32_t* table = b.item_table(block);
    for (int32_t index = 0; index < b.distinct_count[block]; ++index) {
      const int32_t id = static_cast<int32_t>(b.id(block, index));
      const int32_t slot = hash_insert<D>(table, b.mask(), b.distinct_keys, b.blocks.d, id);
      b.distinct_slot[id] = slot;
      atomic_min_i32(table + slot, id);
    }
  });
}

// Numbers the owners in block order; owners [M] gets each vertex's distinct id.
at::Tensor number_vertices(const CpuBuild& b) {
  std::vector<int32_t> block_first(b.blocks.count + 1, 0);
  b.blocks.for_each([&](int64_t block) {
    int32_t owners = 0;
    for (int32_t index = 0; index < b.distinct_count[block]; ++index) owners += b.is_owner(block, index);
    block_first[block + 1] = owners;
  });
  for (int64_t block = 0; block < b.blocks.count; ++block) block_first[block + 1] += block_first[block];
  at::Tensor owners_t = at::empty({block_first.back()}, at::kInt);
  int32_t* owners = owners_t.data_ptr<int32_t>();
  b.blocks.for_each([&](int64_t block) {
    int32_t vertex = block_first[block];
    for (int32_t index = 0; index < b.distinct_count[block]; ++index) {
      if (b.is_owner(block, index)) {
        b.vertex_of_distinct[b.id(block, index)] = vertex;
        owners[vertex++] = static_cast<int32_t>(b.id(block, index));
      }
    }
  });
  return owners_t;
}

// Replaces each entry's distinct-key index in offsets by its vertex id.
void assign_offsets(const CpuBuild& b, int32_t* offsets) {
  b.blocks.for_each([&](int64_t block) {
    const int32_t* table = b.item_table(block);
    std::vector<int32_t> vertex(b.distinct_count[block]);
    for (int32_t index = 0; index < b.distinct_count[block]; ++index) {
      vertex[index] = b.vertex_of_distinct[table[b.distinct_slot[b.id(block, index)]]];
    }
    const int64_t d1 = b.blocks.d1;
    const auto [first, end] = b.blocks.real_points(block);
    for (int64_t e = first * d1; e < end * d1; ++e) offsets[e] = vertex[offsets[e]];
  });
}

template <int D>
void find_neighbours(const CpuBuild& b, const int32_t* owners, int32_t vertices, int32_t* pairs) {
  const int d = b.blocks.d;
  at::parallel_for(0, vertices, kVertexGrain, [&](int64_t begin, int64_t end) {
    for (int64_t v = begin; v < end; ++v) {
      const int32_t owner = owners[v];
      const int32_t* table = b.item_table(owner / b.blocks.capacity);
      for (int axis = 0; axis <= d; ++axis) {
        find_blur_neighbours<D>(table, b.mask(), b.distinct_keys, d, b.distinct_keys + static_cast<int64_t>(owner) * d,
                                axis, b.vertex_of_distinct, pairs + (static_cast<int64_t>(axis) * vertices + v) * 2);
      }
    }
  });
}

// CSR of entries per vertex by a counting sort over fixed chunks of entries: each chunk counts
// its entries per vertex, a prefix over (vertex, chunk) gives each chunk its place in every
// vertex's list, and each chunk fills its places in entry order, so every list is ascending
// without sorting. The result does not depend on the chunking.
void build_splat_csr(const int32_t* offsets, const float* weights, int64_t entries, int32_t vertices, int32_t* ptr,
                     int32_t* splat_entries, float* splat_weights) {
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
    for (int64_t e = first; e < last; ++e) {
      const int32_t k = next[offsets[e]]++;
      splat_entries[k] = static_cast<int32_t>(e);
    }
  });
  // Gathered afterwards rather than scattered with the entries: scattering both arrays doubled
  // the cache lines every entry dirties, and the scatter's cost is those lines.
  at::parallel_for(0, entries, kEntryGrain, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) splat_weights[k] = weights[splat_entries[k]];
  });
}

// Where a build puts the lattice tensors: fresh tensors its caller owns, or (transient) views
// of this thread's scratch memory, which its next transient build reuses.
struct BuildMemory {
  bool transient;

  // offsets and weights [B, P, D1], splat_entries and splat_weights [B * P * D1].
  std::array<at::Tensor, 4> entry_arrays(int64_t batch, int64_t points, int d1) const {
    const int64_t entries = batch * points * d1;
    if (!transient) {
      return {empty_filled_buffer({batch, points, d1}, at::kInt), empty_filled_buffer({batch, points, d1}, at::kFloat),
              empty_filled_buffer({entries}, at::kInt), empty_filled_buffer({entries}, at::kFloat)};
    }
    const at::Tensor scratch = scratch_buffer(Scratch::kLatticeEntries, 4 * entries, at::kInt);
    const auto part = [&](int64_t k, at::ScalarType dtype) {
      return scratch.narrow(0, k * entries, entries).view(dtype);
    };
    return {part(0, at::kInt).view({batch, points, d1}), part(1, at::kFloat).view({batch, points, d1}),
            part(2, at::kInt), part(3, at::kFloat)};
  }

  // neighbours [D1, M, 2] and splat_ptr [M + 1].
  std::pair<at::Tensor, at::Tensor> vertex_arrays(int d1, int32_t vertices) const {
    const int64_t pairs = int64_t{2} * d1 * vertices;
    if (!transient) return {at::empty({d1, vertices, 2}, at::kInt), at::empty({int64_t{vertices} + 1}, at::kInt)};
    const at::Tensor scratch = scratch_buffer(Scratch::kLatticeVertices, pairs + vertices + 1, at::kInt);
    return {scratch.narrow(0, 0, pairs).view({d1, vertices, 2}), scratch.narrow(0, pairs, int64_t{vertices} + 1)};
  }
};

template <int D>
LatticeTuple build_cpu(const float* features, int64_t batch, int64_t points, int64_t padding, int d,
                       const BuildMemory& memory) {
  const int d1 = d + 1;
  const int64_t entries = batch * points * d1;
  const std::array<at::Tensor, 4> entry_arrays = memory.entry_arrays(batch, points, d1);
  const at::Tensor& offsets = entry_arrays[0];
  const at::Tensor& weights = entry_arrays[1];
  CpuBuild b{Blocks(batch, points, padding, d)};
  const int64_t ids = b.blocks.count * b.blocks.capacity;
  // Sized for every entry being distinct, but only the parts of actual distinct keys are touched.
  const at::Tensor scratch = scratch_buffer(Scratch::kLatticeKeys, ids * (d + 2) + b.blocks.count, at::kInt);
  b.distinct_keys = scratch.data_ptr<int32_t>();
  b.distinct_slot = b.distinct_keys + ids * d;
  b.vertex_of_distinct = b.distinct_slot + ids;
  b.distinct_count = b.vertex_of_distinct + ids;

  const ElevationScale scale = elevation_scale(d);
  at::parallel_for(0, b.blocks.count, 1, [&](int64_t begin, int64_t end) {
    BlockKeys<D> keys(d);
    for (int64_t block = begin; block < end; ++block) {
      b.distinct_count[block] =
          embed_block<D>(b.blocks, block, features, scale, keys, weights.data_ptr<float>(),
                         offsets.data_ptr<int32_t>(), b.distinct_keys + b.id(block, 0) * d);
    }
  });

  int64_t largest_item = 0;
  for (int64_t item = 0; item < batch; ++item) {
    int64_t distinct = 0;
    for (int64_t block = item * b.blocks.per_item; block < (item + 1) * b.blocks.per_item; ++block) {
      distinct += b.distinct_count[block];
    }
    largest_item = std::max(largest_item, distinct);
  }
  b.table_capacity = hash_table_capacity(largest_item);
  const at::Tensor table = scratch_buffer(Scratch::kLatticeTable, batch * b.table_capacity, at::kInt).fill_(-1);
  b.table = table.data_ptr<int32_t>();
  insert_distinct_keys<D>(b);
  const at::Tensor owners = number_vertices(b);
  const int32_t vertices = static_cast<int32_t>(owners.numel());
  assign_offsets(b, offsets.data_ptr<int32_t>());

  const auto [neighbours, splat_ptr] = memory.vertex_arrays(d1, vertices);
  const at::Tensor& splat_entries = entry_arrays[2];
  const at::Tensor& splat_weights = entry_arrays[3];
  find_neighbours<D>(b, owners.data_ptr<int32_t>(), vertices, neighbours.data_ptr<int32_t>());
  build_splat_csr(offsets.data_ptr<int32_t>(), weights.data_ptr<float>(), entries, vertices,
                  splat_ptr.data_ptr<int32_t>(), splat_entries.data_ptr<int32_t>(), splat_weights.data_ptr<float>());
  return {offsets, weights, neighbours, splat_ptr, splat_entries, splat_weights};
}

// The channel count of a filter call: the constant CH when CH > 0, else a runtime value. With
// a constant the per-entry channel loops below compile to straight vector code; with a runtime
// count each entry pays for loop set-up and aliasing checks, which made the filter several times
// slower at the CRF's few channels.
template <int CH>
struct Channels {
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

// Splat of the vertices [vertex_begin, vertex_end) by scattering the span's points in order.
// Each vertex receives its contributions in ascending entry order, starting from zero, exactly
// the sum splat_vertex gathers, so the result is bitwise the same; but the values are read once
// and in order while the writes go to the vertex rows, which are few and stay in cache.
template <typename scalar_t, int CH, bool kUnitStride>
void splat_by_scatter(const LatticeView& lat, const ItemSpan& span, const Values<const scalar_t, kUnitStride>& in,
                      Channels<CH> ch, int32_t vertex_begin, int32_t vertex_end, scalar_t* vertex_values) {
  const int64_t channels = ch.count();
  std::fill(vertex_values + vertex_begin * channels, vertex_values + vertex_end * channels, scalar_t(0));
  const ValueLayout layout = in.known_layout();
  for (int64_t point = span.point_begin; point < span.point_end; ++point) {
    const scalar_t* row = in.data + layout.offset(point, 0);
    for (int64_t e = point * lat.d1; e < (point + 1) * lat.d1; ++e) {
      const int32_t v = lat.offsets[e];
      if (v < vertex_begin || v >= vertex_end) continue;
      add_scaled_row(vertex_values + static_cast<int64_t>(v) * channels, row, static_cast<scalar_t>(lat.weights[e]),
                     channels, layout.channel_stride);
    }
  }
}

// The scatter split among the threads by vertex ranges holding equal numbers of entries.
template <typename scalar_t, int CH, bool kUnitStride>
void splat_by_split_scatter(const LatticeView& lat, const ItemSpan& span,
                            const Values<const scalar_t, kUnitStride>& in, Channels<CH> ch,
                            scalar_t* vertex_values) {
  const int64_t parts = at::get_num_threads();
  const int32_t* ptr_begin = lat.splat_ptr + span.vertex_begin;
  const int32_t* ptr_end = lat.splat_ptr + span.vertex_end;
  const int64_t first_entry = *ptr_begin, span_entries = *ptr_end - first_entry;
  const auto boundary = [&](int64_t part) {
    if (part == parts) return span.vertex_end;
    const int64_t target = first_entry + span_entries * part / parts;
    return static_cast<int32_t>(std::lower_bound(ptr_begin, ptr_end, target) - lat.splat_ptr);
  };
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t part = begin; part < end; ++part) {
      splat_by_scatter(lat, span, in, ch, boundary(part), boundary(part + 1), vertex_values);
    }
  });
}

template <typename scalar_t, int CH, bool kUnitStride>
void splat_by_gather(const LatticeView& lat, const ItemSpan& span, const Values<const scalar_t, kUnitStride>& in,
                     Channels<CH> ch, scalar_t* vertex_values) {
  const int64_t channels = ch.count();
  const ValueLayout layout = in.known_layout();
  RRM_DISPATCH_FEATURE_DIM(lat.d1 - 1, [&] {
    at::parallel_for(span.vertex_begin, span.vertex_end, kVertexGrain, [&](int64_t begin, int64_t end) {
      for (int64_t v = begin; v < end; ++v) {
        for_channel_blocks(channels, [&](auto block, int64_t c) {
          splat_vertex<scalar_t, decltype(block)::value, FEATURE_DIM>(lat, static_cast<int32_t>(v), in.data, layout,
                                                                      nullptr, channels, c, vertex_values);
        });
      }
    });
  });
}

template <typename scalar_t, int CH, bool kUnitStride>
void splat_cpu(const LatticeView& lat, const ItemSpan& span, const Values<const scalar_t, kUnitStride>& in,
               Channels<CH> ch, scalar_t* vertex_values) {
  if (at::get_num_threads() == 1 || at::in_parallel_region()) {
    splat_by_scatter(lat, span, in, ch, span.vertex_begin, span.vertex_end, vertex_values);
  } else if (ch.count() >= kScatterChannels) {
    splat_by_split_scatter(lat, span, in, ch, vertex_values);
  } else {
    splat_by_gather(lat, span, in, ch, vertex_values);
  }
}

// Blurs the span's vertex values in buffer_a along the d+1 axes (in reverse order if reverse),
// ping-ponging with buffer_b; returns the buffer that holds the result.
template <typename scalar_t, int CH>
scalar_t* blur_span(const LatticeView& lat, const ItemSpan& span, Channels<CH> ch, bool reverse, scalar_t* buffer_a,
                    scalar_t* buffer_b) {
  const int64_t channels = ch.count();
  scalar_t* src = buffer_a;
  scalar_t* dst = buffer_b;
  for (int step = 0; step < lat.d1; ++step) {
    const int axis = reverse ? lat.d1 - 1 - step : step;
    at::parallel_for(span.vertex_begin, span.vertex_end, kVertexGrain, [&](int64_t begin, int64_t end) {
      for (int64_t v = begin; v < end; ++v) {
        // With a constant channel count of whole vectors a vertex is one block: its neighbours
        // are looked up once. Other counts (21) run faster in blocks of 8, 4 and 1.
        if constexpr (CH > 0 && CH % 4 == 0) {
          blur_vertex<scalar_t, CH>(lat, static_cast<int32_t>(v), axis, src, channels, 0, dst);
        } else {
          for_channel_blocks(channels, [&](auto block, int64_t c) {
            blur_vertex<scalar_t, decltype(block)::value>(lat, static_cast<int32_t>(v), axis, src, channels, c, dst);
          });
        }
      }
    });
    std::swap(src, dst);
  }
  return src;
}

// Splats and blurs the span's values; returns the buffer (a or b) that holds the result.
template <typename scalar_t, int CH, bool kUnitStride>
scalar_t* splat_blur_span(const LatticeView& lat, const ItemSpan& span, const Values<const scalar_t, kUnitStride>& in,
                          Channels<CH> ch, bool reverse, scalar_t* buffer_a, scalar_t* buffer_b) {
  splat_cpu(lat, span, in, ch, buffer_a);
  return blur_span(lat, span, ch, reverse, buffer_a, buffer_b);
}

// Filters the span's values into points-last out.
template <typename scalar_t, int CH, bool kUnitStride>
void filter_span(const LatticeView& lat, const ItemSpan& span, const Values<const scalar_t, kUnitStride>& in,
                 Channels<CH> ch, bool reverse, scalar_t* buffer_a, scalar_t* buffer_b, scalar_t* out) {
  const int64_t channels = ch.count();
  const scalar_t* src = splat_blur_span(lat, span, in, ch, reverse, buffer_a, buffer_b);
  const scalar_t alpha = slice_scale<scalar_t>(lat.d1 - 1);
  at::parallel_for(span.point_begin, span.point_end, kPointGrain, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      for_channel_blocks(channels, [&](auto block, int64_t c) {
        slice_point<scalar_t, decltype(block)::value>(lat, p, src, channels, c, alpha, out);
      });
    }
  });
}

// Filters values laid out as [B, C, P] channel planes into points-last out, one item at a time
// (an item's planes are one stretch of the array).
template <typename scalar_t, int CH>
void filter_planes(const LatticeView& lat, int64_t points, int64_t items, const scalar_t* values, Channels<CH> ch,
                   bool reverse, scalar_t* buffer_a, scalar_t* buffer_b, scalar_t* out) {
  for (int64_t item = 0; item < items; ++item) {
    const Values<const scalar_t, false> planes{values + item * ch.count() * points, {item * points, 1, points}};
    filter_span(lat, item_span(lat, points, item, item + 1), planes, ch, reverse, buffer_a, buffer_b, out);
  }
}

}  // namespace

void filter_cpu_into(const LatticeView& lat, const ItemSpan& span, const float* values, int64_t channels, bool reverse,
                     float* buffer_a, float* buffer_b, float* out) {
  with_channels(channels, [&](auto ch) {
    filter_span(lat, span, Values<const float, true>{values, points_last(channels)}, ch, reverse, buffer_a, buffer_b,
                out);
  });
}

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

void sum_partials_cpu(const LatticeView& lat, const ItemSpan& span, float* partial_sums, const VertexRange* ranges,
                      int64_t partials, int64_t channels, float* out) {
  const int64_t partial_stride = static_cast<int64_t>(lat.num_vertices) * channels;
  at::parallel_for(span.vertex_begin, span.vertex_end, kVertexGrain, [&](int64_t begin, int64_t end) {
    float* RRM_RESTRICT sum = out;
    if (partials == 0) std::fill(sum + begin * channels, sum + end * channels, 0.f);
    for (int64_t part = 0; part < partials; ++part) {
      const int64_t range_begin = std::clamp<int64_t>(ranges[part].begin, begin, end);
      const int64_t first = range_begin * channels;
      const int64_t last = std::clamp<int64_t>(ranges[part].end, range_begin, end) * channels;
      float* RRM_RESTRICT partial = partial_sums + part * partial_stride;
      if (part == 0) {
        // The first array is added to zero as it is read, rather than to rows zeroed first: one
        // pass less over the rows, and the same sums (0 + x, also for x = -0).
        std::fill(sum + begin * channels, sum + first, 0.f);
        std::fill(sum + last, sum + end * channels, 0.f);
#pragma omp simd
        for (int64_t i = first; i < last; ++i) {
          sum[i] = 0.f + partial[i];
          partial[i] = 0.f;
        }
      } else {
#pragma omp simd
        for (int64_t i = first; i < last; ++i) {
          sum[i] = sum[i] + partial[i];
          partial[i] = 0.f;
        }
      }
    }
  });
}

const float* blur_cpu_into(const LatticeView& lat, const ItemSpan& span, int64_t channels, float* buffer_a,
                           float* buffer_b) {
  const float* blurred = nullptr;
  with_channels(channels, [&](auto ch) { blurred = blur_span(lat, span, ch, false, buffer_a, buffer_b); });
  return blurred;
}

// float64 filtering serves finite-difference checks, not speed: one runtime-channel version.
void filter_cpu_into(const LatticeView& lat, const ItemSpan& span, const double* values, int64_t channels, bool reverse,
                     double* buffer_a, double* buffer_b, double* out) {
  filter_span(lat, span, Values<const double, true>{values, points_last(channels)}, Channels<0>{channels}, reverse,
              buffer_a, buffer_b, out);
}

namespace {

LatticeTuple build_with_memory(const at::Tensor& features_in, int64_t point_block, const BuildMemory& memory) {
  const at::Tensor features = checked_features(features_in);
  const int64_t batch = features.size(0);
  const int64_t points = features.size(1);
  const int64_t padding = padding_points(points, point_block);
  const int d = static_cast<int>(features.size(2));
  return RRM_DISPATCH_FEATURE_DIM(
      d, [&] { return build_cpu<FEATURE_DIM>(features.data_ptr<float>(), batch, points, padding, d, memory); });
}

}  // namespace

LatticeTuple lattice_build_cpu(const at::Tensor& features, int64_t point_block) {
  return build_with_memory(features, point_block, BuildMemory{false});
}

LatticeTuple lattice_build_transient_cpu(const at::Tensor& features, int64_t point_block) {
  return build_with_memory(features, point_block, BuildMemory{true});
}

// values [B, P, C] may be points-last or, as a [B, C, H, W] tensor viewed as [B, P, C] is, a
// stack of channel planes, which the splat reads where they are; other layouts are made
// points-last first. The output is points-last [B, P, C] on every device.
at::Tensor lattice_filter_cpu(const at::Tensor& offsets, const at::Tensor& weights, const at::Tensor& neighbours,
                              const at::Tensor& splat_ptr, const at::Tensor& splat_entries,
                              const at::Tensor& splat_weights, const at::Tensor& values_in, bool reverse) {
  const LatticeTuple lattice =
      contiguous_lattice({offsets, weights, neighbours, splat_ptr, splat_entries, splat_weights});
  check_filter_inputs(lattice, values_in);
  const bool planes = !values_in.is_contiguous() && values_in.transpose(1, 2).is_contiguous();
  const at::Tensor values = planes ? values_in : values_in.contiguous();
  at::Tensor out = empty_filled_buffer(values.sizes(), values.options());
  if (values.numel() == 0) return out;
  const LatticeView lat = make_view(lattice);
  const int64_t channels = values.size(2);
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "lattice_filter_cpu", [&] {
    at::Tensor buffer_a = at::empty({lat.num_vertices, channels}, values.options());
    at::Tensor buffer_b = at::empty({lat.num_vertices, channels}, values.options());
    scalar_t* a = buffer_a.data_ptr<scalar_t>();
    scalar_t* b = buffer_b.data_ptr<scalar_t>();
    if (planes) {
      const auto run = [&](auto ch) {
        filter_planes(lat, values.size(1), values.size(0), values.data_ptr<scalar_t>(), ch, reverse, a, b,
                      out.data_ptr<scalar_t>());
      };
      if constexpr (std::is_same_v<scalar_t, float>) {
        with_channels(channels, run);
      } else {
        run(Channels<0>{channels});
      }
    } else {
      filter_cpu_into(lat, item_span(lat, values.size(1), 0, values.size(0)), values.data_ptr<scalar_t>(), channels,
                      reverse, a, b, out.data_ptr<scalar_t>());
    }
  });
  return out;
}

RRM_CPU_KERNELS(m) {
  m.impl("lattice_build", &lattice_build_cpu);
  m.impl("lattice_filter", &lattice_filter_cpu);
}

}  // namespace lattice
}  // namespace rrm
