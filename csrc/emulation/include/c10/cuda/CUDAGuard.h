// c10::cuda::CUDAGuard for the emulated CUDA build: its device is the host, so there is no
// current device to switch.
#pragma once

#include <c10/core/Device.h>

namespace c10 {
namespace cuda {

struct CUDAGuard {
  explicit CUDAGuard(Device) {}
  explicit CUDAGuard(DeviceIndex) {}
};

}  // namespace cuda
}  // namespace c10
