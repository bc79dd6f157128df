#include "common/phase_runner.h"

#include <ATen/Parallel.h>

#include <chrono>
#include <exception>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace rrm {
namespace {

// How long a helper polls for the next run before it sleeps.
constexpr int64_t kHelperPollNanoseconds = 50000;

// Polls `done` for about `nanoseconds`; true as soon as it holds.
template <typename Done>
bool poll_for(int64_t nanoseconds, const Done& done) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point deadline = Clock::now() + std::chrono::nanoseconds(nanoseconds);
  do {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
#if defined(__x86_64__) || defined(__i386__)
      _mm_pause();
#endif
    }
  } while (Clock::now() < deadline);
  return done();
}

// Set on helpers, and on every thread while it runs a share: no team or run can start there.
thread_local bool busy = false;

// Sets `flag` for the lifetime of the object.
struct Raise {
  explicit Raise(bool& flag) : flag(flag), before(flag) { flag = true; }
  ~Raise() { flag = before; }
  bool& flag;
  bool before;
};

// The threads of one parallel region (with_team): the owner, which runs the region's body, and
// helpers, which wait for the phase runs the body starts and help with them.
//
// A run opens a gate, wakes the helpers and runs its own share; each helper that wakes while
// the gate is open takes the next share. When its own share is done the run closes the gate, so
// helpers that wake later take none, and waits only for the helpers inside: a helper the
// scheduler has not run by then costs the run nothing.
class Team {
 public:
  explicit Team(int size) : size_(size) {}

  int size() const { return size_; }

  // On the owner: work(0) here, work(1), ..., work(shares) on the helpers that come in time.
  void run(int shares, c10::function_ref<void(int)> work) {
    work_ = &work;
    shares_.store(shares, std::memory_order_relaxed);
    gate_.store(kOpen, std::memory_order_release);
    wake_helpers();
    struct Close {
      Team& team;
      ~Close() { team.close(); }
    } close{*this};
    const Raise in_share(busy);
    work(0);
  }

  // On a helper: takes shares of the owner's runs until the owner dismisses the team.
  void serve() {
    const Raise helping(busy);
    uint32_t seen = generation_.load(std::memory_order_acquire);
    while (true) {
      take_share();
      if (dismissed_.load(std::memory_order_acquire)) return;
      if (!poll_for(kHelperPollNanoseconds, [&] { return generation_.load(std::memory_order_acquire) != seen; })) {
        generation_.wait(seen, std::memory_order_acquire);
      }
      seen = generation_.load(std::memory_order_acquire);
    }
  }

  void dismiss() {
    dismissed_.store(true, std::memory_order_release);
    wake_helpers();
  }

 private:
  // gate_: kOpen, the helpers inside the open run (low bits) and the shares handed out.
  static constexpr uint32_t kOpen = 1u << 31;
  static constexpr uint32_t kInsideMask = 0xffff;
  static constexpr uint32_t kShareOne = 1u << 16;
  static constexpr uint32_t kShareMask = 0x7fffu << 16;

  void wake_helpers() {
    generation_.fetch_add(1, std::memory_order_acq_rel);
    generation_.notify_all();
  }

  void take_share() {
    uint32_t gate = gate_.load(std::memory_order_acquire);
    while ((gate & kOpen) != 0 &&
           static_cast<int>((gate & kShareMask) / kShareOne) < shares_.load(std::memory_order_relaxed)) {
      if (gate_.compare_exchange_weak(gate, gate + kShareOne + 1, std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
        (*work_)(1 + static_cast<int>((gate & kShareMask) / kShareOne));
        if (((gate_.fetch_sub(1, std::memory_order_acq_rel) - 1) & (kOpen | kInsideMask)) == 0) gate_.notify_all();
        return;
      }
    }
  }

  void close() {
    uint32_t gate = gate_.fetch_and(~kOpen, std::memory_order_acq_rel) & ~kOpen;
    while ((gate & kInsideMask) != 0) {
      if (!poll_for(kPhaseSpinNanoseconds,
                    [&] { return (gate_.load(std::memory_order_acquire) & kInsideMask) == 0; })) {
        gate_.wait(gate, std::memory_order_acquire);
      }
      gate = gate_.load(std::memory_order_acquire);
    }
  }

  const int size_;
  std::atomic<uint32_t> generation_{0};  // bumped for every run and the dismissal; helpers sleep on it
  std::atomic<uint32_t> gate_{0};
  std::atomic<bool> dismissed_{false};
  // The open run's work and share count, written before the gate opens.
  const c10::function_ref<void(int)>* work_ = nullptr;
  std::atomic<int> shares_{0};
};

// The team whose body the calling thread is running, if any.
thread_local Team* owned_team = nullptr;

bool may_start_team() { return owned_team == nullptr && !busy && !at::in_parallel_region(); }

}  // namespace

int phase_threads(int64_t work, int64_t units_per_thread) {
  const int64_t useful = std::max<int64_t>(work / std::max<int64_t>(units_per_thread, 1), 1);
  if (busy) return 1;
  if (owned_team != nullptr) return static_cast<int>(std::min<int64_t>(useful, owned_team->size()));
  if (!may_start_team()) return 1;
  return static_cast<int>(std::min<int64_t>(useful, at::get_num_threads()));
}

void with_team(int threads, c10::function_ref<void()> body) {
  if (threads <= 1 || !may_start_team()) {
    body();
    return;
  }
  Team team(threads);
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t thread = begin; thread < end; ++thread) {
      if (thread > 0) {
        team.serve();
        continue;
      }
      struct Dismiss {
        Team& team;
        ~Dismiss() {
          owned_team = nullptr;
          team.dismiss();
        }
      } dismiss{team};
      owned_team = &team;
      body();
    }
  });
}

namespace detail {

void wait_for_progress(const std::atomic<uint32_t>& epoch, uint32_t seen) {
  if (poll_for(kPhaseSpinNanoseconds, [&] { return epoch.load(std::memory_order_acquire) != seen; })) return;
  epoch.wait(seen, std::memory_order_acquire);
}

void signal_progress(std::atomic<uint32_t>& epoch) {
  epoch.fetch_add(1, std::memory_order_acq_rel);
  epoch.notify_all();
}

void run_shares(int threads, c10::function_ref<void(int)> work) {
  if (threads > 1 && may_start_team()) {
    with_team(threads, [&] { run_shares(threads, work); });
  } else if (threads > 1 && owned_team != nullptr && !busy) {
    owned_team->run(std::min(threads, owned_team->size()) - 1, work);
  } else {
    work(0);
  }
}

}  // namespace detail
}  // namespace rrm
