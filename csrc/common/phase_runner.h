// Runs CPU work made of phases on the intra-op threads, in one parallel region per run.
//
// Every parallel region ends in a barrier, and every barrier waits for the slowest thread.
// On a machine with more runnable threads than cores, that is often a thread the scheduler has
// just parked, so a kernel made of many regions pays up to a time slice per region. A run here
// opens a single region instead, and its threads synchronise only where the work needs it:
//
// The work is `streams` independent sequences of phases (the images of a batch, say). Phase p
// of a stream consists of plan.chunks(stream, p) chunks that may run in any order, on any
// thread; phase p + 1 opens once every chunk of phase p has finished and plan.finish(stream, p)
// has run (on the thread that finished the last chunk). Threads claim chunks one at a time from
// an open phase, their own stream first and then any other, so a late thread holds up only the
// one chunk it is running, and a stream never waits for a thread, only for chunks. Each thread
// claims from its own share of a phase's chunks (the t-th of `threads` runs of consecutive
// chunks) before it takes from the others', so that on a quiet machine consecutive phases give
// a thread the same runs, whose data it still holds in its cache. A plan whose
// chunks compute results that do not depend on which thread runs them, or when, gives the same
// bits for any thread count.
//
// A Plan provides
//   int64_t phases() const;                         // per stream
//   int64_t chunks(int64_t stream, int64_t phase) const;  // read only once the phase opens
//   void run(int64_t stream, int64_t phase, int64_t chunk, int thread);  // thread < threads
//   void finish(int64_t stream, int64_t phase);
#pragma once

#include <c10/util/FunctionRef.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>

namespace rrm {

// The chunks of `per_chunk` items that `items` items make, the last one shorter.
constexpr int64_t chunks_of(int64_t items, int64_t per_chunk) { return (items + per_chunk - 1) / per_chunk; }

// How long a thread without a chunk to run polls for one before it sleeps (see
// wait_for_progress): long enough to bridge the gap between phases on an idle machine, short
// enough not to keep a core from the thread it waits for on a busy one.
constexpr int64_t kPhaseSpinNanoseconds = 20000;

// The threads a run of about `work` units should use, given that a thread pays for itself from
// `units_per_thread` units on: at most the team's (see with_team), 1 inside a run or an
// OpenMP parallel region not started by with_team, and at most at::get_num_threads().
int phase_threads(int64_t work, int64_t units_per_thread);

// Runs body on the calling thread in one parallel region (at::parallel_for) whose other
// `threads` - 1 threads wait to help the runs body starts (run_phases), so that an op made of
// several runs and ATen calls opens one region, not one per run and per ATen operator: ATen
// operators called from body run serially on the calling thread (it is in a parallel region).
// Where a team cannot start (in a team, a run, or another parallel region), body runs as it is.
void with_team(int threads, c10::function_ref<void()> body);

namespace detail {

// Blocks until `epoch` differs from `seen`: polls for kPhaseSpinNanoseconds, then sleeps.
void wait_for_progress(const std::atomic<uint32_t>& epoch, uint32_t seen);

// Wakes the threads sleeping in wait_for_progress.
void signal_progress(std::atomic<uint32_t>& epoch);

// Runs work(0) on the calling thread and offers work(1), ..., work(threads - 1) to helper
// threads; returns once work(0) has returned and so has every share a helper took. A share no
// helper has taken by then is not run: work must not depend on all its shares running.
void run_shares(int threads, c10::function_ref<void(int)> work);

template <typename Plan>
class PhaseRun {
 public:
  PhaseRun(Plan& plan, int64_t streams, int threads)
      : plan_(plan),
        streams_(streams),
        threads_(threads),
        state_(new StreamState[streams]),
        shares_(new Share[streams * threads]) {
    for (int64_t s = 0; s < streams_; ++s) open_next(s, -1);
  }

  // One thread's share: claims and runs chunks until every stream has run all its phases.
  void work(int thread) {
    const int64_t home = static_cast<int64_t>(thread) * streams_ / threads_;
    while (true) {
      const uint32_t seen = epoch_.load(std::memory_order_acquire);
      bool ran = false;
      for (int64_t i = 0; i < streams_ && !ran; ++i) ran = run_one((home + i) % streams_, thread);
      if (ran) continue;
      if (done_.load(std::memory_order_acquire) == streams_) return;
      wait_for_progress(epoch_, seen);
    }
  }

  void rethrow() const {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  static constexpr int kChunkBits = 32;
  static constexpr uint64_t kChunkMask = (uint64_t{1} << kChunkBits) - 1;

  struct alignas(64) StreamState {
    std::atomic<int64_t> finished{0};  // chunks of the open phase that have finished
  };
  // One thread's share of a stream's open phase. cursor: the phase (high bits) and how many
  // chunks of the share have been handed out (low bits).
  struct alignas(64) Share {
    std::atomic<uint64_t> cursor{0};
  };

  // Claims one chunk of stream s's open phase, from share `home` first, and runs it; false if
  // none is left to claim.
  bool run_one(int64_t s, int home) {
    int64_t phase = 0, chunk = -1;
    for (int i = 0; i < threads_ && chunk < 0; ++i) chunk = claim(s, (home + i) % threads_, phase);
    if (chunk < 0) return false;
    StreamState& state = state_[s];
    guarded([&] { plan_.run(s, phase, chunk, home); });
    if (state.finished.fetch_add(1, std::memory_order_acq_rel) + 1 == plan_.chunks(s, phase)) {
      state.finished.store(0, std::memory_order_relaxed);
      guarded([&] { plan_.finish(s, phase); });
      open_next(s, phase);
    }
    return true;
  }

  // Claims the next chunk of share `share` of stream s's open phase (setting `phase`); -1 if
  // the share has none left.
  int64_t claim(int64_t s, int share, int64_t& phase) {
    std::atomic<uint64_t>& cursor = shares_[s * threads_ + share].cursor;
    uint64_t seen = cursor.load(std::memory_order_acquire);
    int64_t chunk;
    do {
      phase = static_cast<int64_t>(seen >> kChunkBits);
      if (phase >= plan_.phases()) return -1;
      const int64_t chunks = plan_.chunks(s, phase);
      chunk = chunks * share / threads_ + static_cast<int64_t>(seen & kChunkMask);
      if (chunk >= chunks * (share + 1) / threads_) return -1;
    } while (!cursor.compare_exchange_weak(seen, seen + 1, std::memory_order_acq_rel, std::memory_order_acquire));
    return chunk;
  }

  // Opens the first phase with chunks after `phase` (finishing the empty ones on the way).
  void open_next(int64_t s, int64_t phase) {
    for (++phase; phase < plan_.phases() && plan_.chunks(s, phase) == 0; ++phase) {
      guarded([&] { plan_.finish(s, phase); });
    }
    for (int share = 0; share < threads_; ++share) {
      shares_[s * threads_ + share].cursor.store(static_cast<uint64_t>(phase) << kChunkBits,
                                                 std::memory_order_release);
    }
    if (phase >= plan_.phases()) done_.fetch_add(1, std::memory_order_acq_rel);
    signal_progress(epoch_);
  }

  // After a failure the remaining chunks are skipped, but still count as finished, so that
  // every thread gets to the end of the run and the first error is thrown there.
  template <typename Body>
  void guarded(const Body& body) {
    if (failed_.load(std::memory_order_relaxed)) return;
    try {
      body();
    } catch (...) {
      const std::lock_guard<std::mutex> lock(error_mutex_);
      if (!error_) error_ = std::current_exception();
      failed_.store(true, std::memory_order_relaxed);
    }
  }

  Plan& plan_;
  const int64_t streams_;
  const int threads_;
  std::unique_ptr<StreamState[]> state_;
  std::unique_ptr<Share[]> shares_;  // [streams, threads]
  alignas(64) std::atomic<uint32_t> epoch_{0};  // bumped whenever a phase opens
  std::atomic<int64_t> done_{0};                // streams past their last phase
  std::atomic<bool> failed_{false};
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

}  // namespace detail

// Runs `plan` (see the top of this file) over `streams` streams on `threads` threads; with one
// thread, on the calling thread alone, stream by stream in order.
template <typename Plan>
void run_phases(Plan& plan, int64_t streams, int threads) {
  detail::PhaseRun<Plan> run(plan, streams, threads);
  detail::run_shares(threads, [&](int thread) { run.work(thread); });
  run.rethrow();
}

}  // namespace rrm
