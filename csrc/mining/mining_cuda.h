// CUDA launcher of the reliable region mining op's mean field: raw pointers and a stream, no
// ATen, so the .cu compiles with plain nvcc. Returns nullptr on success or a CUDA error string.
#pragma once

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "crf/crf.h"
#include "lattice/lattice.h"
#include "mining/mining.h"

namespace rrm {
namespace mining {
namespace cuda {

// Writes both groups' slot unaries (mining_unary_pixel), then runs the CRF family's
// meanfield_from_slots, writing Q [2, B, L, P] to q. No host synchronisation.
const char* meanfield(const MiningUnary& unary, const crf::MeanfieldProblem& problem,
                      const lattice::LatticeView& gaussian, const lattice::LatticeView& bilateral, int64_t n_iter,
                      const crf::MeanfieldWorkspace& workspace, float* q, cudaStream_t stream);

}  // namespace cuda
}  // namespace mining
}  // namespace rrm
