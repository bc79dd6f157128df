// CPU launcher of the reliable region mining op: the CRF family's CPU mean field, with the slot
// unaries of mining.h.

#include "common/library.h"
#include "common/phase_runner.h"
#include "crf/crf_cpu.h"
#include "mining/mining_ops.h"

namespace rrm {
namespace mining {
namespace {

void meanfield_cpu(const MiningUnary& unary, const crf::MeanfieldProblem& problem,
                   const lattice::LatticeView& gaussian, const lattice::LatticeView& bilateral, int64_t n_iter,
                   const crf::MeanfieldWorkspace& ws, float* q) {
  crf::meanfield_cpu(
      problem, gaussian, bilateral, n_iter, ws,
      [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) mining_unary_pixel(unary, problem, ws.unary_slots, i);
      },
      q);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> reliable_region_labels_cpu(
    const at::Tensor& cams, const at::Tensor& cls_labels, const at::Tensor& images, double alpha_low,
    double alpha_high, int64_t n_iter, double gaussian_sxy, double gaussian_compat, double bilateral_sxy,
    double bilateral_srgb, double bilateral_compat, double cam_alpha, double fg_quantile, double cam_floor,
    double bg_sure, double crf_sure, int64_t ignore_index, bool return_q) {
  const crf::Params crf_params{n_iter, gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb, bilateral_compat};
  // The team's size grows with n_iter: checked before it is sized.
  crf::check_iterations(n_iter);
  std::tuple<at::Tensor, at::Tensor, at::Tensor> result;
  // One team (phase_runner.h) for the op's runs and ATen calls: one parallel region. The mean
  // field's size: every class of every pixel in both groups.
  with_team(crf::meanfield_threads(cams.numel() * kCrfGroups, n_iter), [&] {
    result = reliable_region_labels(cams, cls_labels, images, alpha_low, alpha_high, crf_params, cam_alpha,
                                    fg_quantile, cam_floor, bg_sure, crf_sure, ignore_index, return_q,
                                    &meanfield_cpu);
  });
  return result;
}

}  // namespace

RRM_CPU_KERNELS(m) { m.impl("reliable_region_labels", &reliable_region_labels_cpu); }

}  // namespace mining
}  // namespace rrm
