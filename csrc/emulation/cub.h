// Host versions of the CUB device-wide algorithms the launchers call (DeviceScan,
// DeviceRadixSort), with CUB's signatures and documented semantics:
//   - the two-phase temporary storage: a call with d_temp_storage null only sets
//     temp_storage_bytes; the second call returns cudaErrorInvalidValue if temp_storage_bytes is
//     below that size, raises EmulationError if the storage is a block of this runtime that ends
//     before it, works in the storage and poisons it all before returning;
//   - radix sorts are stable and order keys by bits [begin_bit, end_bit) of their radix
//     representation only (signed integers with the sign bit flipped): keys equal in those bits
//     keep their input order, and the other bits are written out unchanged;
//   - a scan may run in place (d_in == d_out); other overlaps of the input and output ranges
//     are errors (EmulationError), as they are undefined for CUB.
// Integer keys only: CUB's float key ordering (-0.0 == +0.0, NaNs) is not emulated.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <algorithm>
#include <iterator>
#include <string>
#include <type_traits>

#include "emulation/runtime.h"

namespace rrm {
namespace emulation {

// Typed arrays carved from an algorithm's temporary storage in 256-byte aligned pieces, the
// same way for the size query (no storage) and for the call.
class TemporaryLayout {
 public:
  explicit TemporaryLayout(void* storage) : storage_(static_cast<char*>(storage)) {}

  template <typename T>
  T* take(size_t count) {
    T* piece = storage_ == nullptr ? nullptr : reinterpret_cast<T*>(storage_ + bytes_);
    bytes_ += (count * sizeof(T) + kPiece - 1) / kPiece * kPiece;
    return piece;
  }

  size_t bytes() const { return bytes_; }

 private:
  static constexpr size_t kPiece = 256;
  char* storage_;
  size_t bytes_ = kPiece;  // CUB's size queries never return 0
};

// Bits [begin_bit, end_bit) of `key`'s radix representation: unsigned integers as they are,
// signed ones with the sign bit flipped so that they order as numbers.
template <typename Key>
uint64_t radix_digit(Key key, int begin_bit, int end_bit) {
  static_assert(std::is_integral_v<Key> && !std::is_same_v<Key, bool>, "the emulated radix sorts take integer keys");
  using Bits = std::make_unsigned_t<Key>;
  Bits bits = static_cast<Bits>(key);
  if constexpr (std::is_signed_v<Key>) bits ^= Bits{1} << (sizeof(Key) * 8 - 1);
  const int width = end_bit - begin_bit;
  const uint64_t mask = width >= 64 ? ~uint64_t{0} : (uint64_t{1} << width) - 1;
  return width == 0 ? 0 : (static_cast<uint64_t>(bits) >> begin_bit) & mask;
}

template <typename Key>
void check_bit_range(const char* algorithm, int begin_bit, int end_bit) {
  const int key_bits = static_cast<int>(sizeof(Key) * 8);
  if (begin_bit < 0 || end_bit > key_bits || begin_bit > end_bit) {
    throw EmulationError(std::string(algorithm) + ": bit range [" + std::to_string(begin_bit) + ", " +
                         std::to_string(end_bit) + ") is not within the " + std::to_string(key_bits) +
                         " bits of the key");
  }
}

// Raises EmulationError if the byte ranges [a, a + a_bytes) and [b, b + b_bytes) overlap.
void require_disjoint(const char* algorithm, const char* a_name, const void* a, size_t a_bytes, const char* b_name,
                      const void* b, size_t b_bytes);

// Stable sort of items [begin, end) by radix digit into the same positions of the outputs;
// `digits` and `order` are scratch of at least end - begin elements. Values may be null.
template <typename Key, typename Value>
void sort_range(const Key* keys_in, Key* keys_out, const Value* values_in, Value* values_out, int64_t begin,
                int64_t end, int begin_bit, int end_bit, uint64_t* digits, int64_t* order) {
  const int64_t count = end - begin;
  for (int64_t i = 0; i < count; ++i) {
    digits[i] = radix_digit(keys_in[begin + i], begin_bit, end_bit);
    order[i] = i;
  }
  std::stable_sort(order, order + count, [&](int64_t a, int64_t b) { return digits[a] < digits[b]; });
  for (int64_t i = 0; i < count; ++i) keys_out[begin + i] = keys_in[begin + order[i]];
  if (values_out != nullptr) {
    for (int64_t i = 0; i < count; ++i) values_out[begin + i] = values_in[begin + order[i]];
  }
}

template <typename Key, typename Value>
cudaError_t radix_sort(const char* algorithm, void* storage, size_t& storage_bytes, const Key* keys_in,
                       Key* keys_out, const Value* values_in, Value* values_out, int64_t items, int begin_bit,
                       int end_bit) {
  if (items < 0) throw EmulationError(std::string(algorithm) + ": negative num_items");
  TemporaryLayout layout(storage);
  uint64_t* digits = layout.take<uint64_t>(items);
  int64_t* order = layout.take<int64_t>(items);
  if (storage == nullptr) {
    storage_bytes = layout.bytes();
    return cudaSuccess;
  }
  const cudaError_t status = check_temporary_storage(algorithm, storage, storage_bytes, layout.bytes());
  if (status != cudaSuccess) return status;
  check_bit_range<Key>(algorithm, begin_bit, end_bit);
  const size_t key_bytes = sizeof(Key) * items, value_bytes = sizeof(Value) * items;
  require_disjoint(algorithm, "d_keys_in", keys_in, key_bytes, "d_keys_out", keys_out, key_bytes);
  if (values_out != nullptr) {
    require_disjoint(algorithm, "d_values_in", values_in, value_bytes, "d_values_out", values_out, value_bytes);
    require_disjoint(algorithm, "d_keys_in", keys_in, key_bytes, "d_values_out", values_out, value_bytes);
    require_disjoint(algorithm, "d_keys_out", keys_out, key_bytes, "d_values_in", values_in, value_bytes);
    require_disjoint(algorithm, "d_keys_out", keys_out, key_bytes, "d_values_out", values_out, value_bytes);
  }
  sort_range(keys_in, keys_out, values_in, values_out, 0, items, begin_bit, end_bit, digits, order);
  poison(storage, layout.bytes());
  record_algorithm(algorithm);
  return cudaSuccess;
}

// CUB's value type of a scan's running total (cub::detail::it_value_t of the input).
template <typename Iterator>
using IteratorValue = typename std::iterator_traits<Iterator>::value_type;

template <typename Input, typename Output, typename NumItems>
cudaError_t exclusive_sum(const char* algorithm, void* storage, size_t& storage_bytes, Input in, Output out,
                          NumItems num_items) {
  using Total = IteratorValue<Input>;
  const int64_t items = static_cast<int64_t>(num_items);
  if (items < 0) throw EmulationError(std::string(algorithm) + ": negative num_items");
  TemporaryLayout layout(storage);
  Total* totals = layout.take<Total>(items);
  if (storage == nullptr) {
    storage_bytes = layout.bytes();
    return cudaSuccess;
  }
  const cudaError_t status = check_temporary_storage(algorithm, storage, storage_bytes, layout.bytes());
  if (status != cudaSuccess) return status;
  if constexpr (std::is_pointer_v<Input> && std::is_pointer_v<Output>) {
    if (static_cast<const void*>(in) != static_cast<const void*>(out)) {
      require_disjoint(algorithm, "d_in", in, sizeof(*in) * items, "d_out", out, sizeof(*out) * items);
    }
  }
  Total running{};
  for (int64_t i = 0; i < items; ++i) {
    totals[i] = running;
    running = running + in[i];
  }
  for (int64_t i = 0; i < items; ++i) out[i] = totals[i];
  poison(storage, layout.bytes());
  record_algorithm(algorithm);
  return cudaSuccess;
}

}  // namespace emulation
}  // namespace rrm

namespace cub {

struct NullType {};

struct DeviceScan {
  template <typename InputIteratorT, typename OutputIteratorT, typename NumItemsT>
  static cudaError_t ExclusiveSum(void* d_temp_storage, size_t& temp_storage_bytes, InputIteratorT d_in,
                                  OutputIteratorT d_out, NumItemsT num_items, cudaStream_t = 0) {
    return rrm::emulation::exclusive_sum("cub::DeviceScan::ExclusiveSum", d_temp_storage, temp_storage_bytes, d_in,
                                         d_out, num_items);
  }
};

struct DeviceRadixSort {
  template <typename KeyT, typename ValueT, typename NumItemsT>
  static cudaError_t SortPairs(void* d_temp_storage, size_t& temp_storage_bytes, const KeyT* d_keys_in,
                               KeyT* d_keys_out, const ValueT* d_values_in, ValueT* d_values_out,
                               NumItemsT num_items, int begin_bit = 0, int end_bit = sizeof(KeyT) * 8,
                               cudaStream_t = 0) {
    return rrm::emulation::radix_sort("cub::DeviceRadixSort::SortPairs", d_temp_storage, temp_storage_bytes,
                                      d_keys_in, d_keys_out, d_values_in, d_values_out,
                                      static_cast<int64_t>(num_items), begin_bit, end_bit);
  }

  template <typename KeyT, typename NumItemsT>
  static cudaError_t SortKeys(void* d_temp_storage, size_t& temp_storage_bytes, const KeyT* d_keys_in,
                              KeyT* d_keys_out, NumItemsT num_items, int begin_bit = 0,
                              int end_bit = sizeof(KeyT) * 8, cudaStream_t = 0) {
    return rrm::emulation::radix_sort<KeyT, NullType>("cub::DeviceRadixSort::SortKeys", d_temp_storage,
                                                      temp_storage_bytes, d_keys_in, d_keys_out, nullptr, nullptr,
                                                      static_cast<int64_t>(num_items), begin_bit, end_bit);
  }
};

}  // namespace cub
