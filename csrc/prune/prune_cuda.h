// CUDA launcher of prune_reliable_labels: raw pointers and a stream, no ATen, so the .cu
// compiles with plain nvcc. Returns nullptr on success or a CUDA error string.
#pragma once

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "common/temp_allocator.h"
#include "prune/prune.h"

namespace rrm {
namespace prune {
namespace cuda {

// The number of bits of `value` (0 for 0).
inline int bit_width(uint64_t value) {
  int bits = 0;
  while (bits < 64 && (value >> bits) != 0) ++bits;
  return bits;
}

// The bits the quantile sort's keys use: the score's 32, then the class (up to C+1, the label
// of non-candidates) and the image (up to B-1). At most 64 (checked by the caller).
inline int sort_key_bits(int64_t batch, int32_t classes) {
  return 32 + bit_width(static_cast<uint64_t>(classes) + 1) + bit_width(static_cast<uint64_t>(batch - 1));
}

// The largest B * P the launcher sorts in one call (CUB's int item count).
constexpr int64_t kMaxSortedPixels = 2147483647;

// cams [B, C, P], q_low/q_high [B, C+1, P] -> labels int64 [B, P], sure bool [B, P].
// q_low, q_high [B, rows, P] with row_labels [B, rows], or null row_labels and rows = C+1.
// Temporaries (the sort keys, pixel summaries, count tables, CUB storage) come from `temp`.
const char* prune_reliable_labels(const float* cams, const float* q_low, const float* q_high,
                                  const int32_t* row_labels, int32_t rows, int64_t batch, int32_t classes,
                                  int64_t pixels, const PruneParams& params, int64_t* labels, bool* sure,
                                  const TempAllocator& temp, cudaStream_t stream);

}  // namespace cuda
}  // namespace prune
}  // namespace rrm
