// The CPU lattice build: lattice_build's kernel, one run of phase_runner.h over fixed blocks of
// consecutive points of one batch item, so that every result is the same for any thread count:
//   1. Per block: embed each point (embed_simplex) and give each entry the index of its key
//      among the block's distinct keys. Neighbouring points share many simplex vertices, always
//      at the same rank, so many entries are resolved by comparing with the previous point's
//      entry of that rank; the rest go through a small block-local table. Keys are packed into
//      64-bit words there when their coordinates fit (PackedKeys).
//   2. Insert the blocks' distinct keys into their item's table (hash_insert) and elect the
//      smallest of each key its owner (atomic_min_i32). The table is sized by the distinct
//      count, a small multiple of the vertex count, so it stays in cache; sizing it by the
//      entry count made every probe a cache miss.
//   3. Number the owners in block order, which is the order of each vertex's first entry as on
//      CUDA, map every entry to its vertex, find the blur neighbours (find_blur_neighbours) and
//      build the splat CSR by a counting sort.
#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "common/buffers.h"
#include "common/dispatch.h"
#include "common/phase_runner.h"
#include "lattice/lattice_cpu.h"

namespace rrm {
namespace lattice {
namespace {

constexpr int64_t kBlockPoints = 2048;
// Chunk sizes of the steps that run over vertices, entries and table slots.
constexpr int64_t kVertexChunk = 256;
constexpr int64_t kEntryChunk = 16384;
constexpr int64_t kTableChunk = 65536;
// Entries per chunk of the splat CSR's counting sort, at least. There are at most as many
// chunks as threads: every further chunk splits each vertex's list once more, and the lists'
// cache lines are then written by several chunks at different times, each write a miss.
constexpr int64_t kCsrChunkEntries = 32768;

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

// Where a build puts the lattice tensors: fresh tensors its caller owns, or (transient) views
// of the calling thread's scratch memory, which its next transient build reuses. The vertex
// count is known only in the middle of the run, on whichever thread counts the last owners, so
// a transient build sets scratch aside beforehand for the most vertices its entries can make
// (memory that is only touched as far as the actual vertices reach).
class BuildMemory {
 public:
  BuildMemory(bool transient, int d1, int64_t most_vertices)
      : transient_(transient),
        vertex_scratch_(transient ? scratch_buffer(Scratch::kLatticeVertices, (2 * d1 + 1) * most_vertices + 1, at::kInt)
                                  : at::Tensor()) {}

  // offsets and weights [B, P, D1], splat_entries and splat_weights [B * P * D1].
  std::array<at::Tensor, 4> entry_arrays(int64_t batch, int64_t points, int d1) const {
    const int64_t entries = batch * points * d1;
    if (!transient_) {
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

  // neighbours [D1, M, 2] and splat_ptr [M + 1]; callable from any thread of the run.
  std::pair<at::Tensor, at::Tensor> vertex_arrays(int d1, int32_t vertices) const {
    const int64_t pairs = int64_t{2} * d1 * vertices;
    if (!transient_) return {at::empty({d1, vertices, 2}, at::kInt), at::empty({int64_t{vertices} + 1}, at::kInt)};
    return {vertex_scratch_.narrow(0, 0, pairs).view({d1, vertices, 2}),
            vertex_scratch_.narrow(0, pairs, int64_t{vertices} + 1)};
  }

 private:
  bool transient_;
  at::Tensor vertex_scratch_;
};

// The steps of a build, one phase each, and what one chunk of each does.
enum BuildStep : int64_t {
  kEmbed,                // a block: step 1
  kClearTables,          // a run of table slots: emptied
  kInsert,               // a block: its distinct keys into its item's table (step 2)
  kCountOwners,          // a block: how many of its distinct keys own their vertex
  kNumber,               // a block: its owners numbered
  kAssign,               // a block: its entries mapped to vertex ids
  kNeighboursAndCounts,  // a run of vertices: their blur neighbours; or a CSR chunk: its entries per vertex
  kFillCsr,              // a CSR chunk: its entries placed in their vertices' lists
  kGatherWeights,        // a run of CSR entries: their weights
  kBuildSteps
};

// The build as a plan of phase_runner.h. Distinct-key arrays are indexed by distinct id (see
// Blocks); every array a step writes is split among its chunks, or (the tables and owner
// elections) updated atomically with a result that does not depend on the order.
template <int D>
class BuildPlan {
 public:
  BuildPlan(const float* features, int64_t batch, const Blocks& blocks, const BuildMemory& memory,
            const std::array<at::Tensor, 4>& entry_arrays, int threads)
      : items_(batch),
        blocks_(blocks),
        memory_(memory),
        features_(features),
        scale_(elevation_scale(blocks.d)),
        entry_arrays_(entry_arrays),
        offsets_(entry_arrays[0].data_ptr<int32_t>()),
        weights_(entry_arrays[1].data_ptr<float>()),
        splat_entries_(entry_arrays[2].data_ptr<int32_t>()),
        splat_weights_(entry_arrays[3].data_ptr<float>()),
        entries_(entry_arrays[2].numel()),
        csr_chunks_(std::clamp<int64_t>(entries_ / kCsrChunkEntries, 1, threads)),
        block_first_(blocks.count + 1, 0),
        keys_(threads) {
    const int64_t ids = blocks_.count * blocks_.capacity;
    // Sized for every entry being distinct, but only the parts of actual distinct keys are touched.
    keys_scratch_ = scratch_buffer(Scratch::kLatticeKeys, ids * (blocks_.d + 3) + blocks_.count, at::kInt);
    distinct_keys_ = keys_scratch_.data_ptr<int32_t>();
    distinct_slot_ = distinct_keys_ + ids * blocks_.d;
    vertex_of_distinct_ = distinct_slot_ + ids;
    owners_ = vertex_of_distinct_ + ids;
    distinct_count_ = owners_ + ids;
    // Likewise for the tables, whose size the distinct keys decide.
    table_scratch_ = scratch_buffer(Scratch::kLatticeTable,
                                    items_ * hash_table_capacity(blocks_.padded * blocks_.d1), at::kInt);
    table_ = table_scratch_.data_ptr<int32_t>();
  }

  int64_t phases() const { return kBuildSteps; }

  int64_t chunks(int64_t, int64_t step) const {
    switch (step) {
      case kEmbed:
      case kInsert:
      case kCountOwners:
      case kNumber:
      case kAssign:
        return blocks_.count;
      case kClearTables:
        return chunks_of(items_ * table_capacity_, kTableChunk);
      case kNeighboursAndCounts:
        return vertex_chunks() + csr_chunks_;
      case kFillCsr:
        return csr_chunks_;
      case kGatherWeights:
        return chunks_of(entries_, kEntryChunk);
      default:
        return 0;
    }
  }

  void run(int64_t, int64_t step, int64_t chunk, int thread) {
    switch (step) {
      case kEmbed:
        return embed(chunk, thread);
      case kClearTables: {
        const int64_t end = std::min(items_ * table_capacity_, (chunk + 1) * kTableChunk);
        return std::fill(table_ + chunk * kTableChunk, table_ + end, -1);
      }
      case kInsert:
        return insert(chunk);
      case kCountOwners:
        return count_owners(chunk);
      case kNumber:
        return number(chunk);
      case kAssign:
        return assign(chunk);
      case kNeighboursAndCounts:
        return chunk < vertex_chunks() ? find_neighbours(chunk) : count_csr(chunk - vertex_chunks());
      case kFillCsr:
        return fill_csr(chunk);
      case kGatherWeights: {
        const int64_t end = std::min(entries_, (chunk + 1) * kEntryChunk);
        for (int64_t k = chunk * kEntryChunk; k < end; ++k) splat_weights_[k] = weights_[splat_entries_[k]];
        return;
      }
      default:
        return;
    }
  }

  void finish(int64_t, int64_t step) {
    if (step == kEmbed) size_tables();
    if (step == kCountOwners) number_blocks();
    if (step == kNeighboursAndCounts) place_csr_lists();
  }

  LatticeTuple result() const {
    return {entry_arrays_[0], entry_arrays_[1], neighbours_, splat_ptr_, entry_arrays_[2], entry_arrays_[3]};
  }

 private:
  int64_t id(int64_t block, int32_t index) const { return block * blocks_.capacity + index; }
  int32_t* item_table(int64_t block) const { return table_ + blocks_.item(block) * table_capacity_; }
  uint32_t mask() const { return static_cast<uint32_t>(table_capacity_ - 1); }
  bool is_owner(int64_t block, int32_t index) const {
    return item_table(block)[distinct_slot_[id(block, index)]] == id(block, index);
  }
  int64_t vertex_chunks() const { return chunks_of(vertices_, kVertexChunk); }
  int64_t csr_chunk_size() const { return chunks_of(entries_, csr_chunks_); }

  void embed(int64_t block, int thread) {
    if (!keys_[thread]) keys_[thread] = std::make_unique<BlockKeys<D>>(blocks_.d);
    distinct_count_[block] = embed_block<D>(blocks_, block, features_, scale_, *keys_[thread], weights_, offsets_,
                                            distinct_keys_ + id(block, 0) * blocks_.d);
  }

  // Each item's table holds its largest distinct count at a load of at most 1/2.
  void size_tables() {
    int64_t largest_item = 0;
    for (int64_t item = 0; item < items_; ++item) {
      int64_t distinct = 0;
      for (int64_t block = item * blocks_.per_item; block < (item + 1) * blocks_.per_item; ++block) {
        distinct += distinct_count_[block];
      }
      largest_item = std::max(largest_item, distinct);
    }
    table_capacity_ = hash_table_capacity(largest_item);
  }

  void insert(int64_t block) {
    int32_t* table = item_table(block);
    for (int32_t index = 0; index < distinct_count_[block]; ++index) {
      const int32_t id = static_cast<int32_t>(this->id(block, index));
      const int32_t slot = hash_insert<D>(table, mask(), distinct_keys_, blocks_.d, id);
      distinct_slot_[id] = slot;
      atomic_min_i32(table + slot, id);
    }
  }

  void count_owners(int64_t block) {
    int32_t owners = 0;
    for (int32_t index = 0; index < distinct_count_[block]; ++index) owners += is_owner(block, index);
    block_first_[block + 1] = owners;
  }

  // Owners are numbered in block order: each block's first vertex id from the counts before it.
  void number_blocks() {
    for (int64_t block = 0; block < blocks_.count; ++block) block_first_[block + 1] += block_first_[block];
    vertices_ = block_first_.back();
    std::tie(neighbours_, splat_ptr_) = memory_.vertex_arrays(blocks_.d1, vertices_);
    csr_cursor_.assign(csr_chunks_ * vertices_, 0);
  }

  void number(int64_t block) {
    int32_t vertex = block_first_[block];
    for (int32_t index = 0; index < distinct_count_[block]; ++index) {
      if (is_owner(block, index)) {
        vertex_of_distinct_[id(block, index)] = vertex;
        owners_[vertex++] = static_cast<int32_t>(id(block, index));
      }
    }
  }

  // Replaces the block's entries' distinct-key indices in offsets by their vertex ids.
  void assign(int64_t block) {
    const int32_t* table = item_table(block);
    std::vector<int32_t> vertex(distinct_count_[block]);
    for (int32_t index = 0; index < distinct_count_[block]; ++index) {
      vertex[index] = vertex_of_distinct_[table[distinct_slot_[id(block, index)]]];
    }
    const int64_t d1 = blocks_.d1;
    const auto [first, end] = blocks_.real_points(block);
    for (int64_t e = first * d1; e < end * d1; ++e) offsets_[e] = vertex[offsets_[e]];
  }

  void find_neighbours(int64_t chunk) {
    const int d = blocks_.d;
    int32_t* pairs = neighbours_.data_ptr<int32_t>();
    const int64_t end = std::min<int64_t>(vertices_, (chunk + 1) * kVertexChunk);
    for (int64_t v = chunk * kVertexChunk; v < end; ++v) {
      const int32_t owner = owners_[v];
      const int32_t* table = item_table(owner / blocks_.capacity);
      for (int axis = 0; axis <= d; ++axis) {
        find_blur_neighbours<D>(table, mask(), distinct_keys_, d, distinct_keys_ + static_cast<int64_t>(owner) * d,
                                axis, vertex_of_distinct_, pairs + (static_cast<int64_t>(axis) * vertices_ + v) * 2);
      }
    }
  }

  // The splat CSR is a counting sort over fixed chunks of entries: each chunk counts its
  // entries per vertex, a prefix over (vertex, chunk) gives each chunk its place in every
  // vertex's list, and each chunk fills its places in entry order, so every list is ascending
  // without sorting. The result does not depend on the chunking.
  void count_csr(int64_t chunk) {
    int32_t* count = csr_cursor_.data() + chunk * vertices_;
    const int64_t end = std::min(entries_, (chunk + 1) * csr_chunk_size());
    for (int64_t e = chunk * csr_chunk_size(); e < end; ++e) ++count[offsets_[e]];
  }

  void place_csr_lists() {
    int32_t* ptr = splat_ptr_.data_ptr<int32_t>();
    int32_t running = 0;
    for (int32_t v = 0; v < vertices_; ++v) {
      ptr[v] = running;
      for (int64_t c = 0; c < csr_chunks_; ++c) {
        const int32_t count = csr_cursor_[c * vertices_ + v];
        csr_cursor_[c * vertices_ + v] = running;
        running += count;
      }
    }
    ptr[vertices_] = running;
  }

  // The weights are gathered afterwards (kGatherWeights) rather than scattered with the
  // entries: scattering both arrays doubled the cache lines every entry dirties, and the
  // scatter's cost is those lines.
  void fill_csr(int64_t chunk) {
    int32_t* next = csr_cursor_.data() + chunk * vertices_;
    const int64_t end = std::min(entries_, (chunk + 1) * csr_chunk_size());
    for (int64_t e = chunk * csr_chunk_size(); e < end; ++e) splat_entries_[next[offsets_[e]]++] = static_cast<int32_t>(e);
  }

  const int64_t items_;
  const Blocks blocks_;
  const BuildMemory& memory_;
  const float* features_;
  const ElevationScale scale_;
  const std::array<at::Tensor, 4> entry_arrays_;
  int32_t* offsets_;
  float* weights_;
  int32_t* splat_entries_;
  float* splat_weights_;
  const int64_t entries_;
  const int64_t csr_chunks_;
  at::Tensor keys_scratch_;
  at::Tensor table_scratch_;
  int32_t* distinct_keys_;       // [ids, d]
  int32_t* distinct_slot_;       // [ids] slot of the key in its item's table
  int32_t* vertex_of_distinct_;  // [ids] vertex id, written for owners
  int32_t* owners_;              // [vertices] distinct id of each vertex's owner
  int32_t* distinct_count_;      // [blocks]
  int32_t* table_;               // [items, table_capacity_] distinct ids
  int64_t table_capacity_ = 0;   // slots per item
  std::vector<int32_t> block_first_;  // [blocks + 1] owner counts, then first vertex ids
  int32_t vertices_ = 0;
  at::Tensor neighbours_;
  at::Tensor splat_ptr_;
  std::vector<int32_t> csr_cursor_;  // [csr chunks, vertices]
  std::vector<std::unique_ptr<BlockKeys<D>>> keys_;  // per thread, made on its first block
};

// A thread pays for itself from about this many points on.
constexpr int64_t kPointsPerThread = 4096;

template <int D>
LatticeTuple build(const float* features, int64_t batch, int64_t points, int64_t padding, int d, bool transient) {
  const Blocks blocks(batch, points, padding, d);
  const BuildMemory memory(transient, d + 1, blocks.count * blocks.capacity);
  const int threads = phase_threads(batch * (points + padding), kPointsPerThread);
  BuildPlan<D> plan(features, batch, blocks, memory, memory.entry_arrays(batch, points, d + 1), threads);
  run_phases(plan, 1, threads);
  return plan.result();
}

}  // namespace

int build_threads(const at::Tensor& features) {
  return features.dim() >= 2 ? phase_threads(features.size(0) * features.size(1), kPointsPerThread) : 1;
}

LatticeTuple build_cpu(const at::Tensor& features_in, int64_t point_block, bool transient) {
  const at::Tensor features = checked_features(features_in, point_block);
  const int64_t batch = features.size(0);
  const int64_t points = features.size(1);
  const int64_t padding = padding_points(points, point_block);
  const int d = static_cast<int>(features.size(2));
  const LatticeTuple lattice = RRM_DISPATCH_FEATURE_DIM(
      d, [&] { return build<FEATURE_DIM>(features.data_ptr<float>(), batch, points, padding, d, transient); });
  record_built_lattice(lattice);
  return lattice;
}

}  // namespace lattice
}  // namespace rrm
