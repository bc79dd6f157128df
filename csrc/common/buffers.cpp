#include "common/buffers.h"

#include <array>
#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "common/device.h"

namespace rrm {

at::Tensor empty_filled_buffer(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor buffer = at::empty(sizes, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
  if (is_host(buffer.device()) && buffer.nbytes() >= 2 * kHugePage) {
    const uintptr_t start = reinterpret_cast<uintptr_t>(buffer.data_ptr());
    const uintptr_t begin = (start + kHugePage - 1) & ~(kHugePage - 1);
    const uintptr_t end = (start + buffer.nbytes()) & ~(kHugePage - 1);
    // Advice only: where the kernel declines, the buffer fills as before.
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  }
#endif
  return buffer;
}

at::Tensor scratch_buffer(Scratch use, int64_t numel, at::ScalarType dtype) {
  thread_local std::array<at::Tensor, static_cast<size_t>(Scratch::kCount)> kept;
  at::Tensor& bytes = kept[static_cast<size_t>(use)];
  const int64_t needed = numel * static_cast<int64_t>(c10::elementSize(dtype));
  if (!bytes.defined() || bytes.numel() < needed) bytes = empty_filled_buffer({needed}, at::kByte);
  return bytes.narrow(0, 0, needed).view(dtype);
}

}  // namespace rrm
