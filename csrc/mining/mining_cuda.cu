// CUDA launcher of the reliable region mining op's mean field over the body of mining.h; the
// iterations are the CRF family's launcher. One thread per pixel; no atomics.
#include "common/cuda_launch.cuh"
#include "crf/crf_cuda.h"
#include "mining/mining_cuda.h"

namespace rrm {
namespace mining {
namespace cuda {
namespace {

__global__ void unary_kernel(MiningUnary unary, crf::MeanfieldProblem problem, int64_t pixels, float* unary_slots) {
  const int64_t i = global_index();
  if (i < pixels) mining_unary_pixel(unary, problem, unary_slots, i);
}

}  // namespace

const char* meanfield(const MiningUnary& unary, const crf::MeanfieldProblem& problem,
                      const lattice::LatticeView& gaussian, const lattice::LatticeView& bilateral, int64_t n_iter,
                      const crf::MeanfieldWorkspace& workspace, float* q, cudaStream_t stream) {
  const int64_t pixels = gaussian.num_points;
  RRM_LAUNCH(unary_kernel, blocks_for(pixels), kThreads, stream)(unary, problem, pixels, workspace.unary_slots);
  RRM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return crf::cuda::meanfield_from_slots(problem, gaussian, bilateral, n_iter, workspace, q, stream);
}

}  // namespace cuda
}  // namespace mining
}  // namespace rrm
