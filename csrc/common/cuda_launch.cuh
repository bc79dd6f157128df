// Launch helpers for the self-contained .cu launchers (CUDA runtime only, no ATen).
#pragma once

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include "common/temp_allocator.h"

namespace rrm {

constexpr int kThreads = 256;

inline unsigned int blocks_for(int64_t work) {
  const int64_t blocks = (work + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(blocks > 0 ? blocks : 1);
}

__device__ inline int64_t global_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

// Launches `kernel` over `grid` blocks of `block` threads on `stream`, the one launch syntax of
// the launchers:
//   RRM_LAUNCH(kernel, grid, block, stream)(arguments...);
// nvcc compiles it to kernel<<<grid, block, 0, stream>>>(arguments...); the emulated CUDA build
// (csrc/emulation) to a host loop over the grid's threads.
#if defined(RRM_EMULATED_CUDA)
#define RRM_LAUNCH(kernel, grid, block, stream) ::rrm::emulation::Launch(#kernel, kernel, grid, block, stream)
#else
#define RRM_LAUNCH(kernel, grid, block, stream) kernel<<<grid, block, 0, stream>>>
#endif

#define RRM_CUDA_RETURN_IF_ERROR(expr)              \
  do {                                              \
    const cudaError_t rrm_status_ = (expr);         \
    if (rrm_status_ != cudaSuccess) {               \
      return cudaGetErrorString(rrm_status_);       \
    }                                               \
  } while (0)

// Runs a CUB-style two-phase call (size query, then work) with temporary storage from `temp`.
// `call(void* storage, size_t& bytes)` returns a cudaError_t.
template <typename Call>
const char* with_temp_storage(const TempAllocator& temp, Call call) {
  size_t bytes = 0;
  RRM_CUDA_RETURN_IF_ERROR(call(nullptr, bytes));
  RRM_CUDA_RETURN_IF_ERROR(call(temp.take<char>(bytes), bytes));
  return nullptr;
}

}  // namespace rrm
