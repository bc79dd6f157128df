// The CUDA glue's side of a launcher's error: the launchers (*_cuda.cu, no ATen) return nullptr
// or the CUDA error's text (RRM_CUDA_RETURN_IF_ERROR in cuda_launch.cuh), and the glue turns
// the text into an exception naming the op.
#pragma once

#include <c10/util/Exception.h>

namespace rrm {

// Throws, naming `what` (an op, or an op and its step), unless `error` is nullptr.
inline void check_launch(const char* error, const char* what) {
  TORCH_CHECK(error == nullptr, what, " failed on the GPU: ", error);
}

}  // namespace rrm
