// What the emulated CUDA runtime (runtime.h) offers its Python module: the thread order of the
// launches and the counts of what ran.
#pragma once

#include <stddef.h>
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
  int64_t live_allocations = 0;   // cudaMalloc / cudaMallocAsync blocks and scratch not yet freed
  std::map<std::string, int64_t> launches;  // kernel or device-wide algorithm -> times run
};

Counters counters();

// Registers `bytes` bytes at `pointer`, memory of a tensor the glue hands a launcher as scratch
// (common/cuda_scratch.h), as a live allocation of the runtime, and poisons them, so that the
// emulated CUB checks temporary storage in it like in cudaMalloc blocks; forget_scratch
// removes it again (and raises if it is not registered).
void adopt_scratch(void* pointer, size_t bytes);
void forget_scratch(void* pointer);

// Counts one read of device values on the host (common/device.h's to_host).
void record_host_read();

}  // namespace emulation
}  // namespace rrm
