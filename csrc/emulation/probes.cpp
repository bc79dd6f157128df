#include "emulation/probes.h"

#include <algorithm>

#include "common/checks.h"
#include "common/cuda_launch.cuh"
#include "common/float_math.h"
#include "emulation/cub.h"

namespace rrm {
namespace emulation {
namespace {

__global__ void record_order_kernel(int64_t* order, unsigned long long capacity, unsigned long long* next) {
  const unsigned long long slot = atomicAdd(next, 1ull);
  if (slot < capacity) order[slot] = global_index();
}

// thread_order_of records the first threads of a launch only, so that an invalid configuration
// of 2^31 blocks can be tried without allocating a slot per thread.
constexpr int64_t kMaxRecordedThreads = int64_t{1} << 20;

void check_status(cudaError_t status, const char* what) {
  TORCH_CHECK(status == cudaSuccess, what, " failed: ", cudaGetErrorString(status));
}

// Runs `call(storage, bytes)` as with_temp_storage does, with the allocation and the size passed
// off by the given extras.
template <typename Call>
void with_probed_storage(const char* what, int64_t allocated_extra, int64_t passed_extra, const Call& call) {
  size_t bytes = 0;
  check_status(call(nullptr, bytes), what);
  void* storage = nullptr;
  check_status(cudaMallocAsync(&storage, static_cast<size_t>(static_cast<int64_t>(bytes) + allocated_extra), nullptr),
               what);
  size_t passed = static_cast<size_t>(static_cast<int64_t>(bytes) + passed_extra);
  cudaError_t status = cudaSuccess;
  try {
    status = call(storage, passed);
  } catch (...) {
    cudaFreeAsync(storage, nullptr);
    throw;
  }
  check_status(cudaFreeAsync(storage, nullptr), what);
  check_status(status, what);
}

}  // namespace

at::Tensor thread_order_of(int64_t blocks, int64_t threads) {
  TORCH_CHECK(blocks >= 0 && blocks <= UINT32_MAX && threads >= 0 && threads <= UINT32_MAX,
              "blocks and threads must fit in unsigned int, got ", blocks, " and ", threads);
  at::Tensor order = at::full({std::min(blocks * threads, kMaxRecordedThreads)}, -1, at::kLong);
  at::Tensor next = at::zeros({1}, at::kLong);
  RRM_LAUNCH(record_order_kernel, dim3(static_cast<unsigned int>(blocks)), dim3(static_cast<unsigned int>(threads)),
             nullptr)(order.data_ptr<int64_t>(), static_cast<unsigned long long>(order.numel()),
                      reinterpret_cast<unsigned long long*>(next.data_ptr<int64_t>()));
  check_status(cudaGetLastError(), "the launch");
  return order;
}

at::Tensor exclusive_sum(const at::Tensor& values, bool in_place, int64_t allocated_extra, int64_t passed_extra) {
  check_dtype(values, at::kInt, "values");
  const at::Tensor in = values.contiguous().clone();
  at::Tensor out = in_place ? in : at::empty_like(in);
  with_probed_storage("cub::DeviceScan::ExclusiveSum", allocated_extra, passed_extra, [&](void* storage, size_t& bytes) {
    return cub::DeviceScan::ExclusiveSum(storage, bytes, in.data_ptr<int32_t>(), out.data_ptr<int32_t>(), in.numel());
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> radix_sort_pairs(const at::Tensor& keys, const at::Tensor& values,
                                                    bool unsigned_keys, int64_t begin_bit, int64_t end_bit,
                                                    int64_t allocated_extra, int64_t passed_extra) {
  check_dtype(keys, at::kInt, "keys");
  check_dtype(values, at::kInt, "values");
  TORCH_CHECK(keys.sizes() == values.sizes() && keys.dim() == 1, "keys and values must be 1-D of one size");
  const at::Tensor keys_in = keys.contiguous(), values_in = values.contiguous();
  at::Tensor keys_out = at::empty_like(keys_in), values_out = at::empty_like(values_in);
  const int64_t n = keys_in.numel();
  with_probed_storage("cub::DeviceRadixSort::SortPairs", allocated_extra, passed_extra, [&](void* storage,
                                                                                            size_t& bytes) {
    const int first = static_cast<int>(begin_bit), last = static_cast<int>(end_bit);
    if (unsigned_keys) {
      return cub::DeviceRadixSort::SortPairs(
          storage, bytes, reinterpret_cast<const uint32_t*>(keys_in.data_ptr<int32_t>()),
          reinterpret_cast<uint32_t*>(keys_out.data_ptr<int32_t>()), values_in.data_ptr<int32_t>(),
          values_out.data_ptr<int32_t>(), n, first, last);
    }
    return cub::DeviceRadixSort::SortPairs(storage, bytes, keys_in.data_ptr<int32_t>(), keys_out.data_ptr<int32_t>(),
                                           values_in.data_ptr<int32_t>(), values_out.data_ptr<int32_t>(), n, first,
                                           last);
  });
  return {keys_out, values_out};
}

at::Tensor radix_sort_keys(const at::Tensor& keys, int64_t begin_bit, int64_t end_bit, int64_t allocated_extra,
                           int64_t passed_extra) {
  check_dtype(keys, at::kLong, "keys");
  const at::Tensor keys_in = keys.contiguous();
  at::Tensor sorted = at::empty_like(keys_in);
  with_probed_storage("cub::DeviceRadixSort::SortKeys", allocated_extra, passed_extra,
                      [&](void* storage, size_t& bytes) {
                        return cub::DeviceRadixSort::SortKeys(
                            storage, bytes, reinterpret_cast<const uint64_t*>(keys_in.data_ptr<int64_t>()),
                            reinterpret_cast<uint64_t*>(sorted.data_ptr<int64_t>()), keys_in.numel(),
                            static_cast<int>(begin_bit), static_cast<int>(end_bit));
                      });
  return sorted;
}

namespace {

at::Tensor checked_floats(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.device().is_cpu(), name, " must be a float32 CPU tensor");
  return x.contiguous();
}

}  // namespace

at::Tensor float_log(const at::Tensor& x_in) {
  const at::Tensor x = checked_floats(x_in, "x");
  at::Tensor out = at::empty_like(x);
  const float* in = x.const_data_ptr<float>();
  float* result = out.data_ptr<float>();
  for (int64_t i = 0; i < x.numel(); ++i) result[i] = float_math::log_float(in[i]);
  return out;
}

at::Tensor float_pow(const at::Tensor& x_in, const at::Tensor& y_in) {
  const at::Tensor x = checked_floats(x_in, "x");
  const at::Tensor y = checked_floats(y_in, "y");
  TORCH_CHECK(x.sizes() == y.sizes(), "x and y must have one shape");
  at::Tensor out = at::empty_like(x);
  const float* base = x.const_data_ptr<float>();
  const float* power = y.const_data_ptr<float>();
  float* result = out.data_ptr<float>();
  for (int64_t i = 0; i < x.numel(); ++i) result[i] = float_math::pow_float(base[i], power[i]);
  return out;
}

}  // namespace emulation
}  // namespace rrm
