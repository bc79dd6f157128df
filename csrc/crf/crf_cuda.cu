// CUDA launcher of the dense CRF op family over the shared bodies of crf.h; the lattice
// splats and blurs are the lattice family's launchers. One thread per pixel; no atomics.
#include "common/cuda_launch.cuh"
#include "crf/crf_cuda.h"
#include "lattice/lattice_cuda.h"

namespace rrm {
namespace crf {
namespace cuda {
namespace {

__global__ void fill_ones_kernel(int64_t count, float* out) {
  const int64_t i = global_index();
  if (i < count) out[i] = 1.f;
}

__global__ void norm_kernel(int64_t count, const float* filtered_ones, float* norm) {
  const int64_t i = global_index();
  if (i < count) norm[i] = symmetric_norm(filtered_ones[i]);
}

__global__ void gather_unary_kernel(MeanfieldProblem problem, int64_t pixels, float* unary_slots) {
  const int64_t i = global_index();
  if (i < pixels) gather_unary_pixels(problem, unary_slots, i);
}

__global__ void update_kernel(MeanfieldProblem problem, MeanfieldStep step, int64_t pixels) {
  const int64_t i = global_index();
  if (i < pixels) update_pixel(problem, step, i);
}

// Writes 1 / sqrt(filter(1) + 1e-20) of one lattice to norm, using scratch [pixels] and the
// lattice's vertex buffers.
const char* symmetric_norms(const lattice::LatticeView& lat, float* vertex_a, float* vertex_b, float* scratch,
                            float* norm, cudaStream_t stream) {
  const int64_t pixels = lat.num_points;
  RRM_LAUNCH(fill_ones_kernel, blocks_for(pixels), kThreads, stream)(pixels, scratch);
  const char* error = lattice::cuda::filter<float>(lat, scratch, 1, false, vertex_a, vertex_b, scratch, stream);
  if (error != nullptr) return error;
  RRM_LAUNCH(norm_kernel, blocks_for(pixels), kThreads, stream)(pixels, scratch, norm);
  return nullptr;
}

}  // namespace

const char* meanfield(const MeanfieldProblem& problem, const lattice::LatticeView& gaussian,
                      const lattice::LatticeView& bilateral, int64_t n_iter, const MeanfieldWorkspace& workspace,
                      float* q, cudaStream_t stream) {
  const int64_t pixels = gaussian.num_points;
  RRM_LAUNCH(gather_unary_kernel, blocks_for(pixels), kThreads, stream)(problem, pixels, workspace.unary_slots);
  return meanfield_from_slots(problem, gaussian, bilateral, n_iter, workspace, q, stream);
}

const char* meanfield_from_slots(const MeanfieldProblem& problem, const lattice::LatticeView& gaussian,
                                 const lattice::LatticeView& bilateral, int64_t n_iter,
                                 const MeanfieldWorkspace& workspace, float* q, cudaStream_t stream) {
  const int64_t pixels = gaussian.num_points;
  const int64_t channels = slot_channels(problem);
  const char* error = symmetric_norms(gaussian, workspace.gaussian_vertex_a, workspace.gaussian_vertex_b,
                                      workspace.q_slots, workspace.gaussian_norm, stream);
  if (error != nullptr) return error;
  error = symmetric_norms(bilateral, workspace.bilateral_vertex_a, workspace.bilateral_vertex_b, workspace.q_slots,
                          workspace.bilateral_norm, stream);
  if (error != nullptr) return error;

  MeanfieldStep step = initial_step(problem, workspace, gaussian, bilateral, n_iter == 0 ? q : nullptr);
  RRM_LAUNCH(update_kernel, blocks_for(pixels), kThreads, stream)(problem, step, pixels);
  for (int64_t iteration = 0; iteration < n_iter; ++iteration) {
    error = lattice::cuda::splat_blur(gaussian, workspace.q_slots, workspace.gaussian_norm, channels,
                                      workspace.gaussian_vertex_a, workspace.gaussian_vertex_b,
                                      &step.gaussian_vertices, stream);
    if (error != nullptr) return error;
    error = lattice::cuda::splat_blur(bilateral, workspace.q_slots, workspace.bilateral_norm, channels,
                                      workspace.bilateral_vertex_a, workspace.bilateral_vertex_b,
                                      &step.bilateral_vertices, stream);
    if (error != nullptr) return error;
    step.q = iteration == n_iter - 1 ? q : nullptr;
    RRM_LAUNCH(update_kernel, blocks_for(pixels), kThreads, stream)(problem, step, pixels);
  }
  RRM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return nullptr;
}

}  // namespace cuda
}  // namespace crf
}  // namespace rrm
