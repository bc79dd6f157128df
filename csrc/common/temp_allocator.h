// How the launchers get device memory for their temporaries without allocating it themselves
// (no ATen here, so the .cu files still compile with plain nvcc).
#pragma once

#include <stddef.h>

namespace rrm {

// Hands a launcher device memory for its temporaries (CUB's temporary storage, sort buffers):
// allocate(context, bytes) returns memory usable by work queued on the launcher's stream until
// the launcher's caller returns, or throws. The glue backs it with PyTorch's caching allocator
// (common/cuda_scratch.h), so temporaries reuse PyTorch's cached blocks.
struct TempAllocator {
  void* (*allocate)(void* context, size_t bytes);
  void* context;

  template <typename T>
  T* take(size_t count) const {
    return static_cast<T*>(allocate(context, count > 0 ? count * sizeof(T) : 1));
  }
};

}  // namespace rrm
