// ATen-level entry points of the reliable region mining op (docs/design.md#reliable-region-mining),
// a composite of the lattice, CRF and pruning families: one lattice pair per batch, both CRFs as
// one two-group mean field, then rrm_ops::prune_reliable_labels.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "crf/crf.h"
#include "crf/crf_ops.h"
#include "lattice/lattice.h"
#include "mining/mining.h"

namespace rrm {
namespace mining {

// A device's mean field of the two mining CRFs: fills ws.unary_slots from `unary` (body of
// mining.h), then runs the mean field, writing Q [2, B, L, P] to q.
using MeanfieldRunner = void (*)(const MiningUnary& unary, const crf::MeanfieldProblem& problem,
                                 const lattice::LatticeView& gaussian, const lattice::LatticeView& bilateral,
                                 int64_t n_iter, const crf::MeanfieldWorkspace& ws, float* q);

// Refuses cls_labels on neither the CPU nor cams' device.
void check_cls_labels_device(const at::Tensor& cls_labels, const at::Tensor& cams);

struct MiningShape {
  int64_t batch;
  int64_t classes;
  int64_t height;
  int64_t width;
};

// The op's checks that need no data: dtypes first, then shapes and devices, then the scalar
// arguments (the value checks of cams and cls_labels run with the op, see mining_common.cpp).
MiningShape check_mining_arguments(const at::Tensor& cams, const at::Tensor& cls_labels, const at::Tensor& images,
                                   double alpha_low, double alpha_high, const crf::Params& crf_params,
                                   double cam_alpha, double fg_quantile, double cam_floor, double bg_sure,
                                   double crf_sure, int64_t ignore_index);

// The op rrm_ops::reliable_region_labels for a device with its mean-field runner; both CRFs
// run with the parameters `crf_params`. Returns labels int64 [B, H, W], sure bool [B, H, W] and q
// float32 [2, B, C+1, H, W] (Q_low, Q_high), or [2, B, 0, H, W] without return_q.
std::tuple<at::Tensor, at::Tensor, at::Tensor> reliable_region_labels(
    const at::Tensor& cams, const at::Tensor& cls_labels, const at::Tensor& images, double alpha_low,
    double alpha_high, const crf::Params& crf_params, double cam_alpha, double fg_quantile, double cam_floor,
    double bg_sure, double crf_sure, int64_t ignore_index, bool return_q, MeanfieldRunner run);

}  // namespace mining
}  // namespace rrm
