// Allocation of the large CPU buffers the launchers fill completely.
#pragma once

#include <ATen/ATen.h>

namespace rrm {

// at::empty for a buffer a kernel is about to write in full. A large CPU buffer is fresh memory
// the kernel faults in page by page as it writes; asking for transparent huge pages makes that
// a few faults per 2 MB instead of 512, which at 10 MB and more is a large part of writing the
// buffer once. Sparsely written buffers should use at::empty: a huge page is zeroed whole.
at::Tensor empty_filled_buffer(at::IntArrayRef sizes, const at::TensorOptions& options);

}  // namespace rrm
