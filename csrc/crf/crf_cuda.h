// CUDA launcher of the dense CRF op family: raw pointers and a stream, no ATen, so the .cu
// compiles with plain nvcc. Returns nullptr on success or a CUDA error string.
#pragma once

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "crf/crf.h"
#include "lattice/lattice.h"

namespace rrm {
namespace crf {
namespace cuda {

// Gathers the unary [G, B, L, P] into the workspace's slot rows, then runs meanfield_from_slots.
const char* meanfield(const MeanfieldProblem& problem, const lattice::LatticeView& gaussian,
                      const lattice::LatticeView& bilateral, int64_t n_iter, const MeanfieldWorkspace& workspace,
                      float* q, cudaStream_t stream);

// Computes both kernels' normalisations, Q0 and n_iter updates (with in-place lattice filters
// between them) from the workspace's filled slot unaries, and writes the final Q [G, B, L, P]
// to q. Kernels only: one launch per step, no host synchronisation.
const char* meanfield_from_slots(const MeanfieldProblem& problem, const lattice::LatticeView& gaussian,
                                 const lattice::LatticeView& bilateral, int64_t n_iter,
                                 const MeanfieldWorkspace& workspace, float* q, cudaStream_t stream);

}  // namespace cuda
}  // namespace crf
}  // namespace rrm
