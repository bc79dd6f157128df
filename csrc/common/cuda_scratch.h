// The launchers' temporaries as tensors from PyTorch's allocator (ATen side of temp_allocator.h).
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "common/temp_allocator.h"

#if defined(RRM_EMULATED_CUDA)
#include "emulation/control.h"
#endif

namespace rrm {

// Each request of allocator() is a byte tensor on `device`, kept until this object is destroyed,
// after the glue has queued the launches that use it. PyTorch's CUDA caching allocator ties a
// block to the stream that was current when it was allocated, the stream the launchers run on,
// so a freed block is reused only by work queued after them.
class DeviceScratch {
 public:
  explicit DeviceScratch(const at::Device& device) : options_(at::TensorOptions().device(device).dtype(at::kByte)) {}
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  ~DeviceScratch() {
#if defined(RRM_EMULATED_CUDA)
    for (const at::Tensor& block : blocks_) emulation::forget_scratch(block.data_ptr());
#endif
  }

  TempAllocator allocator() { return {&DeviceScratch::allocate, this}; }

 private:
  static void* allocate(void* context, size_t bytes) {
    DeviceScratch& self = *static_cast<DeviceScratch*>(context);
    self.blocks_.push_back(at::empty({static_cast<int64_t>(bytes)}, self.options_));
    void* memory = self.blocks_.back().data_ptr();
#if defined(RRM_EMULATED_CUDA)
    emulation::adopt_scratch(memory, bytes);
#endif
    return memory;
  }

  at::TensorOptions options_;
  std::vector<at::Tensor> blocks_;
};

}  // namespace rrm
