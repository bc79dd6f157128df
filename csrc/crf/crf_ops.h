// ATen-level entry points of the dense CRF op family.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "crf/crf.h"
#include "lattice/lattice_ops.h"

namespace rrm {
namespace crf {

// The validated, contiguous inputs of a mean-field run. The slot count is padded to a multiple
// of the launcher's slot_multiple (4 on the CPU, where whole SSE vectors then cover a row).
struct MeanfieldInputs {
  at::Tensor unary;        // float32 [B, L, P]
  at::Tensor slot_labels;  // int32 [B, S] (see crf.h); [0, 0] when the batch is empty
  lattice::LatticeTuple gaussian;
  lattice::LatticeTuple bilateral;
};

MeanfieldInputs checked_meanfield_inputs(const at::Tensor& unary, const std::optional<at::Tensor>& label_mask,
                                         const lattice::LatticeTuple& gaussian,
                                         const lattice::LatticeTuple& bilateral, double gaussian_compat,
                                         double bilateral_compat, int64_t n_iter, int64_t slot_multiple);

MeanfieldProblem make_problem(const MeanfieldInputs& inputs, double gaussian_compat, double bilateral_compat);

// The public op: validates scores (or unary) and image, builds both lattices through the
// dispatcher and runs rrm_ops::dense_crf_meanfield, so one function serves every device.
at::Tensor dense_crf(const std::optional<at::Tensor>& scores, const at::Tensor& image,
                     const std::optional<at::Tensor>& unary, int64_t n_iter, double gaussian_sxy,
                     double gaussian_compat, double bilateral_sxy, double bilateral_srgb, double bilateral_compat,
                     const std::optional<at::Tensor>& label_mask);

}  // namespace crf
}  // namespace rrm
