// The emulated CUDA runtime's state: thread order, counters, allocations, last error.
#include "emulation/runtime.h"

#include <stdlib.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <numeric>
#include <random>
#include <vector>

#include "emulation/control.h"
#include "emulation/cub.h"

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

namespace rrm {
namespace emulation {
namespace {

// Like cudaMalloc's: CUB and vector loads rely on it.
constexpr size_t kAllocationAlignment = 256;

// Poison bytes: a set pattern without a thread order, one of these with a seed.
constexpr unsigned char kIndexOrderPoison = 0xa5;
constexpr unsigned char kSeededPoisons[] = {0x5a, 0xff, 0x00, 0xc3};

struct State {
  std::mutex mutex;
  std::optional<uint64_t> seed;
  uint64_t launches_since_seed = 0;
  unsigned char poison = kIndexOrderPoison;
  Counters counters;
  std::map<uintptr_t, size_t> allocations;  // start -> bytes
};

State& state() {
  static State instance;
  return instance;
}

thread_local cudaError_t last_error = cudaSuccess;

bool valid_configuration(dim3 grid, dim3 block) {
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  return grid.x >= 1 && grid.x <= 0x7fffffffu && grid.y >= 1 && grid.y <= 65535 && grid.z >= 1 &&
         grid.z <= 65535 && block.x >= 1 && block.x <= 1024 && block.y >= 1 && block.y <= 1024 && block.z >= 1 &&
         block.z <= 64 && threads <= 1024;
}

cudaError_t allocate(void** pointer, size_t bytes) {
  if (pointer == nullptr) return cudaErrorInvalidValue;
  *pointer = nullptr;
  if (bytes == 0) return cudaSuccess;
  if (posix_memalign(pointer, kAllocationAlignment, bytes) != 0) return cudaErrorMemoryAllocation;
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  std::memset(*pointer, s.poison, bytes);
  s.allocations.emplace(reinterpret_cast<uintptr_t>(*pointer), bytes);
  ++s.counters.live_allocations;
  return cudaSuccess;
}

// Removes the registered allocation starting at `pointer` (EmulationError if there is none).
void unregister(void* pointer, const char* function) {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  const auto found = s.allocations.find(reinterpret_cast<uintptr_t>(pointer));
  if (found == s.allocations.end()) {
    throw EmulationError(std::string(function) +
                         " of a pointer that is not the start of a live cudaMalloc / cudaMallocAsync block or "
                         "scratch (freed twice, or never allocated)");
  }
  s.allocations.erase(found);
  --s.counters.live_allocations;
}

cudaError_t release(void* pointer, const char* function) {
  if (pointer == nullptr) return cudaSuccess;
  unregister(pointer, function);
  free(pointer);
  return cudaSuccess;
}

// The remaining bytes of the registered allocation holding `pointer`, or 0 if none holds it.
size_t registered_bytes_from(const State& s, const void* pointer) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(pointer);
  auto after = s.allocations.upper_bound(address);
  if (after == s.allocations.begin()) return 0;
  const auto& [start, bytes] = *std::prev(after);
  return address < start + bytes ? start + bytes - address : 0;
}

}  // namespace

void set_thread_order(std::optional<uint64_t> seed) {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  s.seed = seed;
  s.launches_since_seed = 0;
  s.poison = seed.has_value() ? kSeededPoisons[*seed % std::size(kSeededPoisons)] : kIndexOrderPoison;
}

Counters counters() {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  return s.counters;
}

void adopt_scratch(void* pointer, size_t bytes) {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  std::memset(pointer, s.poison, bytes);
  s.allocations.emplace(reinterpret_cast<uintptr_t>(pointer), bytes);
  ++s.counters.live_allocations;
}

void forget_scratch(void* pointer) { unregister(pointer, "forget_scratch"); }

void record_host_read() {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  ++s.counters.host_reads;
}

void record_algorithm(const char* name) {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  ++s.counters.launches[name];
}

ThreadOrder::ThreadOrder(dim3 grid, dim3 block, const int64_t* permutation)
    : grid_(grid),
      block_(block),
      size_(static_cast<int64_t>(grid.x) * grid.y * grid.z * block.x * block.y * block.z),
      permutation_(permutation) {}

void ThreadOrder::enter(int64_t i) const {
  const int64_t thread = permutation_ == nullptr ? i : permutation_[i];
  const int64_t per_block = static_cast<int64_t>(block_.x) * block_.y * block_.z;
  const int64_t block = thread / per_block;
  const int64_t in_block = thread % per_block;
  threadIdx = {static_cast<unsigned int>(in_block % block_.x),
               static_cast<unsigned int>(in_block / block_.x % block_.y),
               static_cast<unsigned int>(in_block / (int64_t{block_.x} * block_.y))};
  blockIdx = {static_cast<unsigned int>(block % grid_.x), static_cast<unsigned int>(block / grid_.x % grid_.y),
              static_cast<unsigned int>(block / (int64_t{grid_.x} * grid_.y))};
  blockDim = block_;
  gridDim = grid_;
}

void launch_grid(const char* kernel, dim3 grid, dim3 block, void (*run)(const ThreadOrder&, const void*),
                 const void* context) {
  if (!valid_configuration(grid, block)) {
    last_error = cudaErrorInvalidConfiguration;
    return;
  }
  std::vector<int64_t> permutation;
  const ThreadOrder index_order(grid, block, nullptr);
  State& s = state();
  {
    const std::lock_guard<std::mutex> lock(s.mutex);
    ++s.counters.launches[std::string(kernel, std::strcspn(kernel, "<"))];
    if (s.seed.has_value()) {
      permutation.resize(static_cast<size_t>(index_order.size()));
      std::iota(permutation.begin(), permutation.end(), int64_t{0});
      std::mt19937_64 random(*s.seed * 0x9e3779b97f4a7c15ull + s.launches_since_seed++);
      std::shuffle(permutation.begin(), permutation.end(), random);
    }
  }
  run(ThreadOrder(grid, block, permutation.empty() ? nullptr : permutation.data()), context);
}

cudaError_t check_temporary_storage(const char* algorithm, const void* storage, size_t passed, size_t required) {
  if (passed < required) return cudaErrorInvalidValue;
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  const size_t available = registered_bytes_from(s, storage);
  if (available != 0 && available < required) {
    throw EmulationError(std::string(algorithm) + ": its temporary storage holds " + std::to_string(available) +
                         " bytes, but its size query asked for " + std::to_string(required) +
                         " (temp_storage_bytes claims " + std::to_string(passed) + ")");
  }
  return cudaSuccess;
}

void require_disjoint(const char* algorithm, const char* a_name, const void* a, size_t a_bytes, const char* b_name,
                      const void* b, size_t b_bytes) {
  const uintptr_t a_begin = reinterpret_cast<uintptr_t>(a), b_begin = reinterpret_cast<uintptr_t>(b);
  if (a_bytes > 0 && b_bytes > 0 && a_begin < b_begin + b_bytes && b_begin < a_begin + a_bytes) {
    throw EmulationError(std::string(algorithm) + ": " + a_name + " and " + b_name + " overlap");
  }
}

void poison(void* pointer, size_t bytes) {
  State& s = state();
  unsigned char value;
  {
    const std::lock_guard<std::mutex> lock(s.mutex);
    value = s.poison;
  }
  std::memset(pointer, value, bytes);
}

}  // namespace emulation
}  // namespace rrm

using rrm::emulation::state;

cudaError_t cudaMalloc(void** pointer, size_t bytes) { return rrm::emulation::allocate(pointer, bytes); }

cudaError_t cudaFree(void* pointer) { return rrm::emulation::release(pointer, "cudaFree"); }

cudaError_t cudaMallocAsync(void** pointer, size_t bytes, cudaStream_t) {
  return rrm::emulation::allocate(pointer, bytes);
}

cudaError_t cudaFreeAsync(void* pointer, cudaStream_t) { return rrm::emulation::release(pointer, "cudaFreeAsync"); }

cudaError_t cudaMemsetAsync(void* pointer, int value, size_t bytes, cudaStream_t) {
  if (bytes > 0 && pointer == nullptr) return cudaErrorInvalidValue;
  std::memset(pointer, value, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* destination, const void* source, size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
  if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault) return cudaErrorInvalidMemcpyDirection;
  if (bytes > 0 && (destination == nullptr || source == nullptr)) return cudaErrorInvalidValue;
  if (kind == cudaMemcpyDeviceToHost) rrm::emulation::record_host_read();
  std::memmove(destination, source, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* destination, const void* source, size_t bytes, cudaMemcpyKind kind) {
  return cudaMemcpyAsync(destination, source, bytes, kind, nullptr);
}

cudaError_t cudaStreamSynchronize(cudaStream_t) {
  rrm::emulation::State& s = state();
  const std::lock_guard<std::mutex> lock(s.mutex);
  ++s.counters.synchronizations;
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() { return cudaStreamSynchronize(nullptr); }

cudaError_t cudaGetLastError() {
  const cudaError_t error = rrm::emulation::last_error;
  rrm::emulation::last_error = cudaSuccess;
  return error;
}

cudaError_t cudaPeekAtLastError() { return rrm::emulation::last_error; }

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer:
      return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection:
      return "invalid copy direction for memcpy";
  }
  return "unrecognized error code";
}
