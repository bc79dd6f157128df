// A host emulation of the part of the CUDA runtime the launchers use, so that the CUDA build's
// sources (the .cu launchers, their glue and the shared kernel bodies) compile with the host
// compiler and run on the CPU, for tests (see docs/testing.md).
//
// Device memory is host memory and streams run nothing asynchronously. A kernel is a host
// function; a launch runs it once per (block, thread) of its grid, one thread after the other,
// with blockIdx, threadIdx, blockDim and gridDim set, in index order or in a seeded random
// permutation (set_thread_order). The emulation counts launches per kernel and the host reads
// of device values, and keeps a registry of its allocations so that misuse of them (a foreign
// or double free, CUB temporary storage smaller than its size query reported) raises
// EmulationError instead of corrupting memory as it would on a GPU.
//
// Not emulated: shared memory, __syncthreads and warp primitives (the launchers use none), and
// concurrency between threads: each runs to completion before the next starts.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__

enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
};
typedef enum cudaError cudaError_t;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
};

// The built-in variables of the emulated thread that is running.
extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;

cudaError_t cudaMalloc(void** pointer, size_t bytes);
cudaError_t cudaFree(void* pointer);
cudaError_t cudaMallocAsync(void** pointer, size_t bytes, cudaStream_t stream);
cudaError_t cudaFreeAsync(void* pointer, cudaStream_t stream);
cudaError_t cudaMemsetAsync(void* pointer, int value, size_t bytes, cudaStream_t stream = 0);
cudaError_t cudaMemcpy(void* destination, const void* source, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* destination, const void* source, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = 0);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t error);

// The typed overloads cuda_runtime.h adds (nvcc includes it in every .cu file).
template <typename T>
cudaError_t cudaMalloc(T** pointer, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(pointer), bytes);
}
template <typename T>
cudaError_t cudaMallocAsync(T** pointer, size_t bytes, cudaStream_t stream) {
  return cudaMallocAsync(reinterpret_cast<void**>(pointer), bytes, stream);
}

// Integer and floating-point atomics. The emulated threads run one at a time, but these are
// real atomics all the same.
#define RRM_EMULATED_ATOMICS(T)                                                                         \
  inline T atomicAdd(T* address, T value) { return __atomic_fetch_add(address, value, __ATOMIC_RELAXED); } \
  inline T atomicSub(T* address, T value) { return __atomic_fetch_sub(address, value, __ATOMIC_RELAXED); } \
  inline T atomicExch(T* address, T value) { return __atomic_exchange_n(address, value, __ATOMIC_RELAXED); } \
  inline T atomicCAS(T* address, T expected, T desired) {                                             \
    __atomic_compare_exchange_n(address, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED); \
    return expected;                                                                                    \
  }                                                                                                     \
  inline T atomicMin(T* address, T value) {                                                             \
    T current = __atomic_load_n(address, __ATOMIC_RELAXED);                                             \
    while (value < current &&                                                                           \
           !__atomic_compare_exchange_n(address, &current, value, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) { \
    }                                                                                                   \
    return current;                                                                                     \
  }                                                                                                     \
  inline T atomicMax(T* address, T value) {                                                             \
    T current = __atomic_load_n(address, __ATOMIC_RELAXED);                                             \
    while (value > current &&                                                                           \
           !__atomic_compare_exchange_n(address, &current, value, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) { \
    }                                                                                                   \
    return current;                                                                                     \
  }
RRM_EMULATED_ATOMICS(int)
RRM_EMULATED_ATOMICS(unsigned int)
RRM_EMULATED_ATOMICS(unsigned long long)
#undef RRM_EMULATED_ATOMICS

// A float sum depends on the order of the additions, so kernels that use these give results
// that change with the thread order.
template <typename T>
T emulated_float_atomic_add(T* address, T value) {
  T current;
  __atomic_load(address, &current, __ATOMIC_RELAXED);
  T updated;
  do {
    updated = current + value;
  } while (!__atomic_compare_exchange(address, &current, &updated, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
  return current;
}
inline float atomicAdd(float* address, float value) { return emulated_float_atomic_add(address, value); }
inline double atomicAdd(double* address, double value) { return emulated_float_atomic_add(address, value); }

template <typename To, typename From>
To emulated_bit_cast(From from) {
  static_assert(sizeof(To) == sizeof(From), "bit casts keep the size");
  To to;
  memcpy(&to, &from, sizeof(To));
  return to;
}
inline unsigned int __float_as_uint(float x) { return emulated_bit_cast<unsigned int>(x); }
inline float __uint_as_float(unsigned int x) { return emulated_bit_cast<float>(x); }
inline int __float_as_int(float x) { return emulated_bit_cast<int>(x); }
inline float __int_as_float(int x) { return emulated_bit_cast<float>(x); }
inline long long __double_as_longlong(double x) { return emulated_bit_cast<long long>(x); }
inline double __longlong_as_double(long long x) { return emulated_bit_cast<double>(x); }

namespace rrm {
namespace emulation {

// A use of the emulated runtime that would be undefined behaviour on a GPU.
class EmulationError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

// The threads of one launch, in the order they run: index order, or a permutation drawn from
// the seed of set_thread_order and the launch's position in the sequence since it was set.
class ThreadOrder {
 public:
  ThreadOrder(dim3 grid, dim3 block, const int64_t* permutation);
  int64_t size() const { return size_; }
  // Sets the built-in variables to those of the i-th thread to run.
  void enter(int64_t i) const;

 private:
  dim3 grid_;
  dim3 block_;
  int64_t size_;
  const int64_t* permutation_;  // null: index order
};

// Checks the launch configuration (an invalid one sets the error cudaGetLastError returns and
// runs no thread), counts the launch of `kernel` (its name up to any template arguments) and
// calls run(order) with the order of its threads.
void launch_grid(const char* kernel, dim3 grid, dim3 block, void (*run)(const ThreadOrder&, const void*),
                 const void* context);

// RRM_LAUNCH(kernel, grid, block, stream)(arguments...) (common/cuda_launch.cuh): the arguments
// are converted to the kernel's parameter types once, at the launch, as CUDA copies them.
template <typename... Params>
class Launch {
 public:
  Launch(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t)
      : name_(name), kernel_(kernel), grid_(grid), block_(block) {}

  template <typename... Args>
  void operator()(Args&&... args) const {
    static_assert(sizeof...(Args) == sizeof...(Params), "a launch passes every kernel parameter");
    const Call call{kernel_, std::tuple<std::decay_t<Params>...>(std::forward<Args>(args)...)};
    launch_grid(name_, grid_, block_, &Call::run, &call);
  }

 private:
  struct Call {
    void (*kernel)(Params...);
    std::tuple<std::decay_t<Params>...> arguments;

    static void run(const ThreadOrder& order, const void* context) {
      const Call& call = *static_cast<const Call*>(context);
      for (int64_t i = 0; i < order.size(); ++i) {
        order.enter(i);
        std::apply(call.kernel, call.arguments);
      }
    }
  };

  const char* name_;
  void (*kernel_)(Params...);
  dim3 grid_;
  dim3 block_;
};

// Counts a call of a device-wide algorithm (the emulated CUB's) like a kernel launch.
void record_algorithm(const char* name);

// Checks that `storage` holds at least `required` bytes: the caller passed temp_storage_bytes
// >= required (else CUB's cudaErrorInvalidValue is returned), and, when `storage` lies in an
// allocation of this runtime, that allocation extends that far past it (EmulationError if not).
cudaError_t check_temporary_storage(const char* algorithm, const void* storage, size_t passed, size_t required);

// Overwrites `bytes` bytes at `pointer` with the current poison byte: fresh allocations and
// used temporary storage hold it, so results never depend on their contents by chance.
void poison(void* pointer, size_t bytes);

}  // namespace emulation
}  // namespace rrm
