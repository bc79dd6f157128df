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

// Computes both kernels' normalisations, Q0 and n_iter updates (with in-place lattice filters
// between them) in the workspace, and writes the final Q [B, L, P] to q. Kernels only: one
// launch per step, no host synchronisation.
const char* meanfield(const MeanfieldProblem& problem, const lattice::LatticeView& gaussian,
                      const lattice::LatticeView& bilateral, int64_t n_iter, const MeanfieldWorkspace& workspace,
                      float* q, cudaStream_t stream);

}  // namespace cuda
}  // namespace crf
}  // namespace rrm
