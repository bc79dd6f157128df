// Device-independent part of the reliable region mining op: argument validation, CAM
// normalisation, the slot table, the lattices, and the pruning op, around a device's two-group
// mean field (mining_cpu.cpp, mining_cuda_glue.cpp).
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <limits>

#include "common/buffers.h"
#include "common/checks.h"
#include "common/device.h"
#include "common/library.h"
#include "crf/crf_ops.h"
#include "lattice/lattice_ops.h"
#include "mining/mining_ops.h"
#include "prune/prune_ops.h"

namespace rrm {
namespace mining {
namespace {

void check_power(double alpha, const char* name) {
  TORCH_CHECK(std::isfinite(alpha) && alpha > 0, name, " must be a positive finite number, got ", alpha);
}

// bool [B, C+1] on cls_labels' device: the background, then the present classes.
at::Tensor label_mask_of(const at::Tensor& cls_labels) {
  const at::Tensor present = cls_labels.ne(0);
  return at::cat({at::ones({present.size(0), 1}, present.options()), present}, 1);
}

// Q [G, B, S, P] over the slots of slot_labels [B, S] spread over all `labels` labels:
// [G, B, labels, P], 0 for absent labels. Padding slots go to an extra row that is dropped.
at::Tensor q_over_labels(const at::Tensor& slot_q, const at::Tensor& slot_labels, int64_t labels) {
  const at::Tensor rows = at::where(slot_labels >= 0, slot_labels, labels).to(at::kLong);
  const at::Tensor index = rows.view({1, rows.size(0), rows.size(1), 1}).expand(slot_q.sizes());
  at::Tensor dense = at::zeros({slot_q.size(0), slot_q.size(1), labels + 1, slot_q.size(3)}, slot_q.options());
  return dense.scatter_(2, index, slot_q).narrow(2, 0, labels).contiguous();
}

}  // namespace

void check_cls_labels_device(const at::Tensor& cls_labels, const at::Tensor& cams) {
  TORCH_CHECK(is_host(cls_labels.device()) || cls_labels.device() == cams.device(),
              "cls_labels must be on the CPU or on ", cams.device(), " with cams, got ", cls_labels.device());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> reliable_region_labels(
    const at::Tensor& cams, const at::Tensor& cls_labels, const at::Tensor& images, double alpha_low,
    double alpha_high, const crf::Params& crf_params, double cam_alpha, double fg_quantile, double cam_floor,
    double bg_sure, double crf_sure, int64_t ignore_index, bool return_q, MeanfieldRunner run) {
  check_dim(cams, 4, "cams", "[B, C, H, W]");
  check_floating(cams, "cams");
  const int64_t batch = cams.size(0), classes = cams.size(1), height = cams.size(2), width = cams.size(3);
  const int64_t pixels = height * width;
  TORCH_CHECK(classes >= 1, "cams must have at least one class channel, got shape ", shape_of(cams));
  TORCH_CHECK(cls_labels.dim() == 2 && cls_labels.size(0) == batch && cls_labels.size(1) == classes,
              "cls_labels must be [B, C] = [", batch, ", ", classes, "], got shape ", shape_of(cls_labels));
  check_cls_labels_device(cls_labels, cams);
  const at::Tensor rgb = crf::image_channels_last(images, cams, "cams");
  check_power(alpha_low, "alpha_low");
  check_power(alpha_high, "alpha_high");
  crf::check_params(crf_params);
  // Validates the pruning parameters before the CRFs run (the pruning op checks them again).
  prune::make_params(cam_alpha, fg_quantile, cam_floor, bg_sure, crf_sure, ignore_index);

  const at::TensorOptions floats = cams.options().dtype(at::kFloat);
  if (batch * pixels == 0) {
    return {at::empty({batch, height, width}, floats.dtype(at::kLong)),
            at::empty({batch, height, width}, floats.dtype(at::kBool)),
            at::empty({kCrfGroups, batch, return_q ? classes + 1 : 0, height, width}, floats)};
  }

  // Step 1: absent classes zeroed, each map divided by (its max + 1e-5), in float32. Dividing
  // an absent class by +inf zeroes it (CAMs are finite and >= 0) in the same pass.
  const at::Tensor present = cls_labels.to(cams.device()).ne(0).unsqueeze(2);
  const at::Tensor float_cams = cams.reshape({batch, classes, pixels}).to(at::kFloat);
  const at::Tensor denominators =
      at::where(present, float_cams.amax(2, /*keepdim=*/true).add_(1e-5), std::numeric_limits<float>::infinity());
  const at::Tensor normalised = float_cams / denominators;
  const at::Tensor max_cam = normalised.amax(1).contiguous();

  // The CRFs run on each image's present labels only, in S slots: the batch's largest present
  // count, padded (crf::padded_slot_count). That count is read on the host with the Gaussian
  // lattice build's vertex count, so compacting costs no read of its own on a device (and
  // nothing for CPU cls_labels); the slot table itself is built on cls_labels' device.
  const at::Tensor label_mask = label_mask_of(cls_labels);
  DeferredScalars present_labels({label_mask.sum(1).max()});
  const auto [gaussian_built, bilateral_built] = crf::crf_lattices(rgb, crf_params);
  const int64_t needed = static_cast<int64_t>(present_labels.values()[0]);
  const at::Tensor slot_labels =
      crf::slot_labels_of(label_mask, crf::padded_slot_count(needed)).to(cams.device());
  const lattice::LatticeTuple gaussian_tensors = lattice::contiguous_lattice(gaussian_built);
  const lattice::LatticeTuple bilateral_tensors = lattice::contiguous_lattice(bilateral_built);
  const lattice::LatticeView gaussian = lattice::make_view(gaussian_tensors);
  const lattice::LatticeView bilateral = lattice::make_view(bilateral_tensors);

  crf::MeanfieldProblem problem;
  problem.unary = nullptr;  // the runner writes the slot unaries itself
  problem.slot_labels = slot_labels.data_ptr<int32_t>();
  problem.batch = batch;
  problem.points = pixels;
  problem.labels = classes + 1;
  problem.slots = slot_labels.size(1);
  problem.groups = kCrfGroups;
  problem.gaussian_compat = static_cast<float>(crf_params.gaussian_compat);
  problem.bilateral_compat = static_cast<float>(crf_params.bilateral_compat);
  // Q over the slots: S rows per image instead of C+1 (mostly zero) ones.
  problem.q_over_slots = true;
  const MiningUnary unary{normalised.data_ptr<float>(),
                          max_cam.data_ptr<float>(),
                          {static_cast<float>(alpha_low), static_cast<float>(alpha_high)}};
  at::Tensor workspace = crf::allocate_workspace(problem, gaussian, bilateral, floats);
  at::Tensor slot_q = empty_filled_buffer({kCrfGroups, batch, problem.slots, pixels}, floats);
  run(unary, problem, gaussian, bilateral, crf_params.n_iter,
      crf::carve_workspace(workspace, problem, gaussian, bilateral), slot_q.data_ptr<float>());

  static const auto prune_op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow(RRM_OP("prune_reliable_labels"), "")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                                                    double, double, double, double, int64_t,
                                                    const std::optional<at::Tensor>&)>();
  const auto [labels, sure] = prune_op.call(normalised, slot_q[0], slot_q[1], cam_alpha, fg_quantile, cam_floor,
                                            bg_sure, crf_sure, ignore_index, slot_labels);
  const at::Tensor q = return_q ? q_over_labels(slot_q, slot_labels, classes + 1)
                                : at::empty({kCrfGroups, batch, 0, pixels}, floats);
  return {labels.view({batch, height, width}), sure.view({batch, height, width}),
          q.view({kCrfGroups, batch, q.size(2), height, width})};
}

}  // namespace mining
}  // namespace rrm
