// c10::cuda's current stream for the emulated CUDA build: one stream, the default one.
#pragma once

#include <c10/core/Device.h>
#include <cuda_runtime_api.h>

namespace c10 {
namespace cuda {

class CUDAStream {
 public:
  cudaStream_t stream() const { return nullptr; }
  operator cudaStream_t() const { return stream(); }
  void synchronize() const { cudaStreamSynchronize(stream()); }
};

inline CUDAStream getCurrentCUDAStream(DeviceIndex = -1) { return CUDAStream(); }

}  // namespace cuda
}  // namespace c10
