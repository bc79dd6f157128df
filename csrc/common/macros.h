// Portable qualifiers and primitives shared by the CPU and CUDA launchers.
// No ATen here: every header under csrc/<family>/<op>.h must compile with plain nvcc.
#pragma once

#include <stdint.h>

#if defined(__CUDACC__)
#define RRM_HOST_DEVICE __host__ __device__
#else
#define RRM_HOST_DEVICE
#endif

// A pointer through which no other pointer of the function reaches the same memory.
#define RRM_RESTRICT __restrict__

// Asks the CPU compiler to vectorise the loop that follows (its iterations must be independent,
// or reductions GCC may not reorder); nothing for nvcc, where one thread runs one element.
#if !defined(__CUDACC__) && defined(_OPENMP)
#define RRM_SIMD _Pragma("omp simd")
#else
#define RRM_SIMD
#endif

// For the per-element bodies of the hot loops: the CPU compilers otherwise keep the larger ones
// out of line, and a call per pixel stops them vectorising the loop around it.
#if defined(__CUDACC__)
#define RRM_INLINE __forceinline__
#else
#define RRM_INLINE inline __attribute__((always_inline))
#endif

// The atomics below take CUDA's in device code, which nvcc's device pass compiles and so does the
// emulated CUDA build (csrc/emulation), whose runtime provides them on the host.
#if defined(__CUDA_ARCH__) || defined(RRM_EMULATED_CUDA)
#define RRM_CUDA_ATOMICS 1
#endif
#if defined(RRM_EMULATED_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace rrm {

// Compare-and-swap on an int32 slot; returns the value held before the call.
RRM_HOST_DEVICE inline int32_t atomic_cas_i32(int32_t* address, int32_t expected, int32_t desired) {
#if defined(RRM_CUDA_ATOMICS)
  return atomicCAS(reinterpret_cast<int*>(address), expected, desired);
#else
  __atomic_compare_exchange_n(address, &expected, desired, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
  return expected;
#endif
}

RRM_HOST_DEVICE inline void atomic_min_i32(int32_t* address, int32_t value) {
#if defined(RRM_CUDA_ATOMICS)
  atomicMin(reinterpret_cast<int*>(address), value);
#else
  int32_t current = __atomic_load_n(address, __ATOMIC_ACQUIRE);
  while (value < current &&
         !__atomic_compare_exchange_n(address, &current, value, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
  }
#endif
}

RRM_HOST_DEVICE inline int32_t atomic_load_i32(const int32_t* address) {
#if defined(RRM_CUDA_ATOMICS)
  return *reinterpret_cast<const volatile int32_t*>(address);
#else
  return __atomic_load_n(address, __ATOMIC_ACQUIRE);
#endif
}

}  // namespace rrm
