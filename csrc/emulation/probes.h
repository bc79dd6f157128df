// Direct calls of the emulated runtime and CUB on CPU tensors, for the tests of the emulation
// itself. The CUB probes query the temporary storage size, allocate it plus `allocated_extra`
// bytes with cudaMallocAsync, and pass temp_storage_bytes = size + `passed_extra`.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace rrm {
namespace emulation {

// The linear index (block * block size + thread) of each thread of a 1-D launch, in the order
// the threads ran (the first 2^20 to run).
at::Tensor thread_order_of(int64_t blocks, int64_t threads);

// cub::DeviceScan::ExclusiveSum of int32 `values` (in place if asked).
at::Tensor exclusive_sum(const at::Tensor& values, bool in_place, int64_t allocated_extra, int64_t passed_extra);

// cub::DeviceRadixSort::SortPairs of int32 keys (unsigned: their bits as uint32) and int32 values.
std::tuple<at::Tensor, at::Tensor> radix_sort_pairs(const at::Tensor& keys, const at::Tensor& values,
                                                    bool unsigned_keys, int64_t begin_bit, int64_t end_bit,
                                                    int64_t allocated_extra, int64_t passed_extra);

// cub::DeviceRadixSort::SortKeys of int64 keys, as the uint64 keys of their bits.
at::Tensor radix_sort_keys(const at::Tensor& keys, int64_t begin_bit, int64_t end_bit, int64_t allocated_extra,
                           int64_t passed_extra);

// log_float, and pow_float of x and y of one shape, of common/float_math.h elementwise on float32
// tensors: the functions the kernels use, for the tests of their rounding.
at::Tensor float_log(const at::Tensor& x);
at::Tensor float_pow(const at::Tensor& x, const at::Tensor& y);

}  // namespace emulation
}  // namespace rrm
