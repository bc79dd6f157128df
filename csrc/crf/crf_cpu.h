// The CPU mean field, shared by the dense CRF and reliable region mining ops.
#pragma once

#include <c10/util/FunctionRef.h>

#include "crf/crf_ops.h"

namespace rrm {
namespace crf {

// Writes the slot unaries (MeanfieldWorkspace::unary_slots) of pixels [begin, end), a range
// within one image.
using UnaryFill = c10::function_ref<void(int64_t begin, int64_t end)>;

// The threads for a mean field over `slot_values` values (pixels times slots) and n_iter
// iterations (phase_threads).
int meanfield_threads(int64_t slot_values, int64_t n_iter);

// The unaries (fill_unary), norms, then n_iter updates of a run; writes Q [G, B, L, P], or
// [G, B, S, P] when problem.q_over_slots is set. One parallel region (phase_runner.h).
void meanfield_cpu(const MeanfieldProblem& problem, const lattice::LatticeView& gaussian,
                   const lattice::LatticeView& bilateral, int64_t n_iter, const MeanfieldWorkspace& ws,
                   UnaryFill fill_unary, float* q);

}  // namespace crf
}  // namespace rrm
