// What the emulated CUDA runtime (runtime.h) offers its Python module: the thread order of the
// launches and the counts of what ran.
#pragma once

#include <stdint.h>

#include <map>
#include <optional>
#include <string>

namespace rrm {
namespace emulation {

// Runs the threads of every following launch in a random permutation drawn from `seed` (and
// the launch's position since this call), or in index order for nullopt. The poison byte of
// fresh allocations and used temporary storage changes with the seed too.
void set_thread_order(std::optional<uint64_t> seed);

// Totals since the process started.
struct Counters {
  int64_t host_reads = 0;         // device values read on the host (to_host, device-to-host copies)
  int64_t synchronizations = 0;   // explicit waits for the device (stream and device synchronisations)
  int64_t live_allocations = 0;   // cudaMalloc / cudaMallocAsync blocks not yet freed
  std::map<std::string, int64_t> launches;  // kernel or device-wide algorithm -> times run
};

Counters counters();

// Counts one read of device values on the host (common/device.h's to_host).
void record_host_read();

}  // namespace emulation
}  // namespace rrm
