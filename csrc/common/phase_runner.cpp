#include "common/phase_runner.h"

#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace rrm {

int phase_threads(int64_t work, int64_t units_per_thread) {
  if (at::in_parallel_region()) return 1;
  const int64_t useful = work / std::max<int64_t>(units_per_thread, 1);
  return static_cast<int>(std::clamp<int64_t>(useful, 1, at::get_num_threads()));
}

namespace detail {

void wait_for_progress(const std::atomic<uint32_t>& epoch, uint32_t seen) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point deadline = Clock::now() + std::chrono::nanoseconds(kPhaseSpinNanoseconds);
  do {
    for (int i = 0; i < 64; ++i) {
      if (epoch.load(std::memory_order_acquire) != seen) return;
#if defined(__x86_64__) || defined(__i386__)
      _mm_pause();
#endif
    }
  } while (Clock::now() < deadline);
  epoch.wait(seen, std::memory_order_acquire);
}

void signal_progress(std::atomic<uint32_t>& epoch) {
  epoch.fetch_add(1, std::memory_order_acq_rel);
  epoch.notify_all();
}

}  // namespace detail
}  // namespace rrm
