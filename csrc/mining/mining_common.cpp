// Device-independent part of the reliable region mining op: argument validation, CAM
// normalisation, the slot table, the lattices, and the pruning op, around a device's two-group
// mean field (mining_cpu.cpp, mining_cuda_glue.cpp).
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <limits>
#include <vector>

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
  TORCH_CHECK_VALUE(std::isfinite(alpha) && alpha > 0, name, " must be a positive finite number, got ", alpha);
}

// cams as float32 [B, C, P], contiguous: the unary body reads it through a raw pointer, so a
// channels_last, transposed, sliced or expanded cams must be copied first (a reshape alone can
// return a strided view).
at::Tensor contiguous_float_cams(const at::Tensor& cams) {
  const at::Tensor floats = cams.to(cams.options().dtype(at::kFloat), /*non_blocking=*/false, /*copy=*/false,
                                    at::MemoryFormat::Contiguous);
  return floats.reshape({cams.size(0), cams.size(1), cams.size(2) * cams.size(3)});
}

// cls_labels must hold only 0 and 1: a bool scalar on its device, true where it does not, and
// the check of its value once read.
at::Tensor cls_labels_not_binary(const at::Tensor& cls_labels) {
  return cls_labels.ne(0).logical_and(cls_labels.ne(1)).any();
}

void check_cls_labels_binary(double not_binary) {
  TORCH_CHECK_VALUE(not_binary == 0, "cls_labels must hold only 0 and 1");
}

// The check read at once, so for CPU cls_labels only (free there).
void check_cls_values_on_host(const at::Tensor& cls_labels) {
  if (!is_host(cls_labels.device()) || cls_labels.numel() == 0) return;
  check_cls_labels_binary(scalars_on_host({cls_labels_not_binary(cls_labels)})[0]);
}

// The batch's largest present-label count, which sizes the slot table, read with the data checks
// of cls_labels (only 0 and 1) and, where they share its device, of cams (finite and >= 0 once
// in float32). On the host they are read at once, for free; on a device they ride on the next
// host read, the Gaussian lattice build's (DeferredScalars), so neither compacting nor checking
// adds a host synchronisation (docs/error-policy.md#value-checks-on-cuda). Device cams beside
// CPU cls_labels are therefore not checked.
class CheckedLabelCount {
 public:
  CheckedLabelCount(const at::Tensor& float_cams, const at::Tensor& cls_labels, const at::Tensor& label_mask)
      : check_cams_(float_cams.device() == cls_labels.device() && float_cams.numel() > 0),
        scalars_(wanted(float_cams, cls_labels, label_mask)) {}

  // The count; throws if a check fails.
  int64_t value() {
    const std::vector<double>& read = scalars_.values();
    check_cls_labels_binary(read[1]);
    if (check_cams_) {
      TORCH_CHECK_VALUE(std::isfinite(read[2]) && std::isfinite(read[3]) && read[2] >= 0,
                        "cams must be finite and >= 0 (in float32), got range [", read[2], ", ", read[3], "]");
    }
    return static_cast<int64_t>(read[0]);
  }

 private:
  std::vector<at::Tensor> wanted(const at::Tensor& float_cams, const at::Tensor& cls_labels,
                                 const at::Tensor& label_mask) const {
    std::vector<at::Tensor> scalars{label_mask.sum(1).max(), cls_labels_not_binary(cls_labels)};
    if (check_cams_) {
      const auto [minimum, maximum] = at::aminmax(float_cams);
      scalars.push_back(minimum);
      scalars.push_back(maximum);
    }
    return scalars;
  }

  const bool check_cams_;
  DeferredScalars scalars_;
};

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
  TORCH_CHECK_VALUE(is_host(cls_labels.device()) || cls_labels.device() == cams.device(),
                    "cls_labels must be on the CPU or on ", cams.device(), " with cams, got ", cls_labels.device());
}

MiningShape check_mining_arguments(const at::Tensor& cams, const at::Tensor& cls_labels, const at::Tensor& images,
                                   double alpha_low, double alpha_high, const crf::Params& crf_params,
                                   double cam_alpha, double fg_quantile, double cam_floor, double bg_sure,
                                   double crf_sure, int64_t ignore_index) {
  check_floating(cams, "cams");
  TORCH_CHECK_TYPE(!at::isComplexType(cls_labels.scalar_type()), "cls_labels must be a real or bool tensor, got ",
                   cls_labels.scalar_type());
  crf::check_image_dtype(images, "images");
  check_dim(cams, 4, "cams", "[B, C, H, W]");
  const MiningShape shape{cams.size(0), cams.size(1), cams.size(2), cams.size(3)};
  TORCH_CHECK_VALUE(shape.classes >= 1, "cams must have at least one class channel, got shape ", shape_of(cams));
  TORCH_CHECK_VALUE(cls_labels.dim() == 2 && cls_labels.size(0) == shape.batch && cls_labels.size(1) == shape.classes,
                    "cls_labels must be [B, C] = [", shape.batch, ", ", shape.classes, "], got shape ",
                    shape_of(cls_labels));
  check_cls_labels_device(cls_labels, cams);
  crf::image_channels_last(images, "images", cams, "cams");
  check_power(alpha_low, "alpha_low");
  check_power(alpha_high, "alpha_high");
  crf::check_params(crf_params);
  prune::make_params(cam_alpha, fg_quantile, cam_floor, bg_sure, crf_sure, ignore_index);
  prune::check_ignore_index(ignore_index, shape.classes);
  return shape;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> reliable_region_labels(
    const at::Tensor& cams, const at::Tensor& cls_labels, const at::Tensor& images, double alpha_low,
    double alpha_high, const crf::Params& crf_params, double cam_alpha, double fg_quantile, double cam_floor,
    double bg_sure, double crf_sure, int64_t ignore_index, bool return_q, MeanfieldRunner run) {
  const MiningShape shape = check_mining_arguments(cams, cls_labels, images, alpha_low, alpha_high, crf_params,
                                                   cam_alpha, fg_quantile, cam_floor, bg_sure, crf_sure,
                                                   ignore_index);
  const int64_t batch = shape.batch, classes = shape.classes, height = shape.height, width = shape.width;
  const int64_t pixels = height * width;
  const at::Tensor rgb = crf::image_channels_last(images, "images", cams, "cams");

  const at::TensorOptions floats = cams.options().dtype(at::kFloat);
  if (batch * pixels == 0) {
    check_cls_values_on_host(cls_labels);
    return {at::empty({batch, height, width}, floats.dtype(at::kLong)),
            at::empty({batch, height, width}, floats.dtype(at::kBool)),
            at::empty({kCrfGroups, batch, return_q ? classes + 1 : 0, height, width}, floats)};
  }

  // The CRFs run on each image's present labels only, in S slots: the batch's largest present
  // count, padded (crf::padded_slot_count); the slot table is built on cls_labels' device.
  const at::Tensor float_cams = contiguous_float_cams(cams);
  const at::Tensor label_mask = label_mask_of(cls_labels);
  CheckedLabelCount present_labels(float_cams, cls_labels, label_mask);
  // Host data is checked before any work; device data with the lattice build's read below.
  if (is_host(cls_labels.device())) present_labels.value();

  // Step 1: absent classes zeroed, each map divided by (its max + 1e-5), in float32. Dividing
  // an absent class by +inf zeroes it (CAMs are finite and >= 0) in the same pass.
  const at::Tensor present = cls_labels.to(cams.device()).ne(0).unsqueeze(2);
  const at::Tensor denominators =
      at::where(present, float_cams.amax(2, /*keepdim=*/true).add_(1e-5), std::numeric_limits<float>::infinity());
  const at::Tensor normalised = float_cams / denominators;
  const at::Tensor max_cam = normalised.amax(1).contiguous();

  const auto [gaussian_built, bilateral_built] = crf::crf_lattices(rgb, crf_params);
  const int64_t needed = present_labels.value();
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
