// ATen-level entry points of the dense CRF op family.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <utility>

#include "crf/crf.h"
#include "lattice/lattice_ops.h"

namespace rrm {
namespace crf {

// A dense CRF's parameters, as the ops take them (rrm_ops.CrfParams).
struct Params {
  int64_t n_iter;
  double gaussian_sxy;
  double gaussian_compat;
  double bilateral_sxy;
  double bilateral_srgb;
  double bilateral_compat;
};

// Refuses a negative iteration count, widths that are not positive and finite, and weights
// that are not finite.
void check_params(const Params& params);

// The slot count for `present` labels (at least 1) rounded up to a multiple of kSlotLanes.
int64_t padded_slot_count(int64_t present);

// label_mask bool [B, L] -> int32 [B, slots]: each image's present labels in ascending order,
// padded with -1. `slots` must be at least the largest present count; no host synchronisation.
at::Tensor slot_labels_of(const at::Tensor& label_mask, int64_t slots);

// The validated, contiguous inputs of a mean-field run.
struct MeanfieldInputs {
  at::Tensor unary;        // float32 [B, L, P]
  at::Tensor slot_labels;  // int32 [B, S] (see crf.h); [0, 0] when the batch is empty
  lattice::LatticeTuple gaussian;
  lattice::LatticeTuple bilateral;
  at::Tensor compat_matrices;  // float32 [2, L, L], or undefined for Potts
};

MeanfieldInputs checked_meanfield_inputs(const at::Tensor& unary, const std::optional<at::Tensor>& label_mask,
                                         const lattice::LatticeTuple& gaussian,
                                         const lattice::LatticeTuple& bilateral, double gaussian_compat,
                                         double bilateral_compat, int64_t n_iter,
                                         const std::optional<at::Tensor>& compat_matrices);

MeanfieldProblem make_problem(const MeanfieldInputs& inputs, double gaussian_compat, double bilateral_compat);

// One uninitialised float tensor holding a run's workspace (on the CPU a view of a buffer the
// calling thread keeps for its next run), and its carving (see crf.h).
at::Tensor allocate_workspace(const MeanfieldProblem& problem, const lattice::LatticeView& gaussian,
                              const lattice::LatticeView& bilateral, const at::TensorOptions& options);
MeanfieldWorkspace carve_workspace(at::Tensor& workspace, const MeanfieldProblem& problem,
                                   const lattice::LatticeView& gaussian, const lattice::LatticeView& bilateral);

// uint8 [B, H, W, 3] or [B, 3, H, W] -> uint8 [B, H, W, 3] (a view) of an image whose batch
// and size must match those of `input` [B, *, H, W]. A [B, 3, 3, 3] image of a 3 x 3 problem is
// read as [B, H, W, 3].
at::Tensor image_channels_last(const at::Tensor& image, const at::Tensor& input, const char* input_name);

// The Gaussian lattice (on (x, y) / gaussian_sxy, built once and tiled over the batch; on the CPU
// reused from the last calls with the same batch, size and sxy) and the bilateral lattice (on
// ((x, y) / bilateral_sxy, rgb / bilateral_srgb)) of rgb uint8 [B, H, W, 3], built through the
// dispatcher on rgb's device, except that a CPU bilateral lattice is built in this thread's
// scratch memory (lattice_build_transient_cpu): it must not outlive the caller's op call.
std::pair<lattice::LatticeTuple, lattice::LatticeTuple> crf_lattices(const at::Tensor& rgb, const Params& params);

// Empties the cache of CPU Gaussian lattices that crf_lattices keeps (for cold-start timings).
void clear_gaussian_lattice_cache();

// The public op: validates scores (or unary) and image, builds both lattices through the
// dispatcher and runs rrm_ops::dense_crf_meanfield, so one function serves every device (on the
// CPU in one team, see phase_runner.h).
at::Tensor dense_crf(const std::optional<at::Tensor>& scores, const at::Tensor& image,
                     const std::optional<at::Tensor>& unary, int64_t n_iter, double gaussian_sxy,
                     double gaussian_compat, double bilateral_sxy, double bilateral_srgb, double bilateral_compat,
                     const std::optional<at::Tensor>& label_mask);

}  // namespace crf
}  // namespace rrm
