// Allocation of the large CPU buffers the launchers fill completely.
#pragma once

#include <ATen/ATen.h>

namespace rrm {

// at::empty for a buffer a kernel is about to write in full. A large CPU buffer is fresh memory
// the kernel faults in page by page as it writes; asking for transparent huge pages makes that
// a few faults per 2 MB instead of 512, which at 10 MB and more is a large part of writing the
// buffer once. Sparsely written buffers should use at::empty: a huge page is zeroed whole.
at::Tensor empty_filled_buffer(at::IntArrayRef sizes, const at::TensorOptions& options);

// The CPU scratch buffers a thread keeps between calls, one per use.
enum class Scratch {
  kMeanfieldWorkspace,
  kCrfEnergies,
  kCrfFeatures,
  kLatticeKeys,
  kLatticeTable,
  kLatticeEntries,
  kLatticeVertices,
  kBlurRows,
  kCount
};

// A CPU buffer of `numel` elements of `dtype` for scratch use `use`, backed by memory this
// thread keeps and hands out again on its next call for the same use (grown when too small).
// Fresh memory of tens of MB per call is mapped, faulted in page by page and given back by the
// allocator every time, which cost about a tenth of a dense CRF call. The buffer is free again
// once the call that asked for it returns, so a use must not be asked for twice at once by one
// thread, and no such buffer may escape the call.
at::Tensor scratch_buffer(Scratch use, int64_t numel, at::ScalarType dtype);

}  // namespace rrm
