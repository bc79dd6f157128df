// CPU launcher of the dense CRF op family: at::parallel_for over the bodies of crf.h (over the
// pixels of one image, or over the images of a batch), with the lattice family's
// allocation-free filter between the updates.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>

#include "common/buffers.h"
#include "common/dispatch.h"
#include "crf/crf_ops.h"

namespace rrm {
namespace crf {
namespace {

constexpr int64_t kPixelGrain = 256;

template <typename Body>
void for_each_pixel(const lattice::ItemSpan& span, const Body& body) {
  at::parallel_for(span.point_begin, span.point_end, kPixelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) body(i);
  });
}

// Writes the symmetric normalisation factors of one lattice into norm, using scratch [pixels]
// and the lattice's vertex buffers.
void norms_cpu(const lattice::LatticeView& lat, const lattice::ItemSpan& span, float* vertex_a, float* vertex_b,
               float* scratch, float* norm) {
  std::fill(scratch + span.point_begin, scratch + span.point_end, 1.f);
  lattice::filter_cpu_into(lat, span, scratch, 1, false, vertex_a, vertex_b, scratch);
  for_each_pixel(span, [&](int64_t i) { norm[i] = symmetric_norm(scratch[i]); });
}

// The mean field of the images [image_begin, image_end) once the norms are known. Images share
// no pixels or vertices, so different images may run concurrently. S > 0 is the slot count.
template <int S>
void meanfield_cpu(const MeanfieldProblem& problem, const lattice::LatticeView& gaussian,
                   const lattice::LatticeView& bilateral, int64_t n_iter, const MeanfieldWorkspace& ws, float* q,
                   int64_t image_begin, int64_t image_end) {
  const lattice::ItemSpan gaussian_span = lattice::item_span(gaussian, problem.points, image_begin, image_end);
  const lattice::ItemSpan bilateral_span = lattice::item_span(bilateral, problem.points, image_begin, image_end);
  const lattice::ItemSpan& pixels = gaussian_span;
  const int64_t channels = slot_channels(problem);

  MeanfieldStep step{ws.gaussian_norm,      ws.bilateral_norm, ws.unary_slots, false, ws.gaussian_values,
                     ws.bilateral_values, n_iter == 0 ? q : nullptr};
  for_each_pixel(pixels, [&](int64_t i) { update_pixel<S>(problem, step, i); });
  step.filtered = true;
  for (int64_t iteration = 0; iteration < n_iter; ++iteration) {
    lattice::filter_cpu_into(gaussian, gaussian_span, ws.gaussian_values, channels, false, ws.gaussian_vertex_a,
                             ws.gaussian_vertex_b, ws.gaussian_values);
    lattice::filter_cpu_into(bilateral, bilateral_span, ws.bilateral_values, channels, false, ws.bilateral_vertex_a,
                             ws.bilateral_vertex_b, ws.bilateral_values);
    step.q = iteration == n_iter - 1 ? q : nullptr;
    for_each_pixel(pixels, [&](int64_t i) { update_pixel<S>(problem, step, i); });
  }
}

}  // namespace

void meanfield_from_slots_cpu(const MeanfieldProblem& problem, const lattice::LatticeView& gaussian,
                              const lattice::LatticeView& bilateral, int64_t n_iter, const MeanfieldWorkspace& ws,
                              float* q) {
  const int64_t images = problem.batch;
  // The norms filter one channel, laid out unlike the K-channel arrays that reuse the same
  // buffers, so they are computed for the whole batch before any image moves on.
  norms_cpu(gaussian, lattice::item_span(gaussian, problem.points, 0, images), ws.gaussian_vertex_a,
            ws.gaussian_vertex_b, ws.gaussian_values, ws.gaussian_norm);
  norms_cpu(bilateral, lattice::item_span(bilateral, problem.points, 0, images), ws.bilateral_vertex_a,
            ws.bilateral_vertex_b, ws.gaussian_values, ws.bilateral_norm);
  // The update unrolls completely at the slot counts of up to 24 present labels.
  with_constant<4, 8, 12, 16, 20, 24>(problem.slots, [&](auto slots) {
    constexpr int S = decltype(slots)::value;
    if (images == 1 || at::get_num_threads() == 1) {
      meanfield_cpu<S>(problem, gaussian, bilateral, n_iter, ws, q, 0, images);
    } else {
      // Whole images per thread: one parallel region instead of about fifteen per iteration,
      // each a barrier. Inside it, the steps' parallel_for calls run inline.
      at::parallel_for(0, images, 1, [&](int64_t begin, int64_t end) {
        for (int64_t image = begin; image < end; ++image) {
          meanfield_cpu<S>(problem, gaussian, bilateral, n_iter, ws, q, image, image + 1);
        }
      });
    }
  });
}

at::Tensor dense_crf_meanfield_cpu(const at::Tensor& unary, const std::optional<at::Tensor>& label_mask,
                                   const at::Tensor& gaussian_offsets, const at::Tensor& gaussian_weights,
                                   const at::Tensor& gaussian_neighbours, const at::Tensor& gaussian_splat_ptr,
                                   const at::Tensor& gaussian_splat_entries, const at::Tensor& gaussian_splat_weights,
                                   const at::Tensor& bilateral_offsets, const at::Tensor& bilateral_weights,
                                   const at::Tensor& bilateral_neighbours, const at::Tensor& bilateral_splat_ptr,
                                   const at::Tensor& bilateral_splat_entries, const at::Tensor& bilateral_splat_weights,
                                   double gaussian_compat, double bilateral_compat, int64_t n_iter) {
  const MeanfieldInputs inputs = checked_meanfield_inputs(
      unary, label_mask,
      {gaussian_offsets, gaussian_weights, gaussian_neighbours, gaussian_splat_ptr, gaussian_splat_entries,
       gaussian_splat_weights},
      {bilateral_offsets, bilateral_weights, bilateral_neighbours, bilateral_splat_ptr, bilateral_splat_entries,
       bilateral_splat_weights},
      gaussian_compat, bilateral_compat, n_iter);
  at::Tensor q = empty_filled_buffer(inputs.unary.sizes(), inputs.unary.options());
  if (q.numel() == 0) return q;
  const MeanfieldProblem problem = make_problem(inputs, gaussian_compat, bilateral_compat);
  const lattice::LatticeView gaussian = lattice::make_view(inputs.gaussian);
  const lattice::LatticeView bilateral = lattice::make_view(inputs.bilateral);
  at::Tensor workspace = allocate_workspace(problem, gaussian, bilateral, q.options());
  const MeanfieldWorkspace ws = carve_workspace(workspace, problem, gaussian, bilateral);
  at::parallel_for(0, gaussian.num_points, kPixelGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) gather_unary_pixel(problem, ws.unary_slots, i);
  });
  meanfield_from_slots_cpu(problem, gaussian, bilateral, n_iter, ws, q.data_ptr<float>());
  return q;
}

TORCH_LIBRARY_IMPL(rrm_ops, CPU, m) {
  m.impl("dense_crf_meanfield", &dense_crf_meanfield_cpu);
  m.impl("dense_crf", &dense_crf);
}

}  // namespace crf
}  // namespace rrm
