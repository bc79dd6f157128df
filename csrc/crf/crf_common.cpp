// Device-independent parts of the dense CRF op family: argument validation, the slot map of
// present labels, and the public dense_crf op composed from lattice_build and the mean-field op,
// registered here once for every device.
#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <cmath>
#include <list>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "common/buffers.h"
#include "common/checks.h"
#include "common/device.h"
#include "common/library.h"
#include "common/phase_runner.h"
#include "crf/crf_cpu.h"
#include "crf/crf_ops.h"

namespace rrm {
namespace crf {
namespace {

void check_lattice(const lattice::LatticeTuple& lat, const char* name, const at::Tensor& unary) {
  const at::Tensor& offsets = std::get<0>(lat);
  TORCH_CHECK_VALUE(offsets.dim() == 3 && offsets.size(0) == unary.size(0) && offsets.size(1) == unary.size(2),
                    name, " lattice must be built over the B = ", unary.size(0), " images of P = ", unary.size(2),
                    " pixels of unary, got offsets of shape ", shape_of(offsets));
  // An empty [B, P, 0] stand-in for values runs the lattice family's structural checks.
  lattice::checked_filter_inputs(lat, at::empty({unary.size(0), unary.size(2), 0}, unary.options()));
}

// Returns the minimum of a floating tensor after checking it is finite (see extremes_of); 0
// for an empty tensor.
double checked_finite_minimum(const at::Tensor& t, const char* name) {
  if (t.numel() == 0) return 0;
  const Extremes extremes = extremes_of(t);
  TORCH_CHECK_VALUE(std::isfinite(extremes.minimum) && std::isfinite(extremes.maximum), name,
                    " contains NaN or infinite values");
  return extremes.minimum;
}

// The largest count of labels present in an image of unary [B, L, P] (L without a label mask),
// after checking that unary is finite: one host read for both, none for an empty unary.
int64_t checked_present_labels(const at::Tensor& unary, const std::optional<at::Tensor>& label_mask) {
  if (unary.numel() == 0) return unary.size(1);
  const auto [minimum, maximum] = at::aminmax(unary);
  std::vector<at::Tensor> wanted{minimum, maximum};
  if (label_mask.has_value()) wanted.push_back(label_mask->sum(1).max());
  const std::vector<double> read = scalars_on_host(wanted);
  TORCH_CHECK_VALUE(std::isfinite(read[0]) && std::isfinite(read[1]), "unary contains NaN or infinite values");
  return label_mask.has_value() ? static_cast<int64_t>(read[2]) : unary.size(1);
}

void check_finite_number(double value, const char* name) {
  TORCH_CHECK_VALUE(std::isfinite(value), name, " must be a finite number, got ", value);
}

void check_positive_number(double value, const char* name) {
  TORCH_CHECK_VALUE(std::isfinite(value) && value > 0, name, " must be a positive finite number, got ", value);
}

// Refuses a standard deviation `sigma` that takes features of range 0..reach (`what`) beyond
// the d-dimensional lattice's range, before anything is built.
void check_sigma_range(double sigma, const char* name, double reach, const std::string& what, int d) {
  const double limit = lattice::max_feature_magnitude(d);
  TORCH_CHECK_VALUE(reach / sigma <= limit, name, " = ", sigma, " is too small", what, ": the features reach ",
                    reach / sigma, ", beyond the lattice's range ", static_cast<int64_t>(limit), " at d = ", d,
                    " (rrm_ops.lattice.max_feature_magnitude); ", name, " must be at least ", reach / limit,
                    " here");
}

// The lattice of `batch` copies of one feature set, from the lattice of one copy: copy b's
// vertex ids and entries are copy 0's shifted by b * M and b * E, which is exactly what a
// batched build assigns (vertices are numbered in entry order), at the cost of one build.
lattice::LatticeTuple tile_lattice(const lattice::LatticeTuple& one, int64_t batch) {
  const at::Tensor& offsets = std::get<0>(one);
  const at::Tensor& neighbours = std::get<2>(one);
  const at::Tensor& splat_ptr = std::get<3>(one);
  const at::Tensor& splat_entries = std::get<4>(one);
  const int64_t points = offsets.size(1), d1 = offsets.size(2);
  const int64_t vertices = splat_ptr.size(0) - 1, entries = splat_entries.numel();
  TORCH_CHECK(batch * entries < (int64_t{1} << 30), "dense_crf: ", batch, " images of ", points,
              " pixels are too many for int32 lattice indices");
  const at::Tensor copy = at::arange(batch, offsets.options());
  const at::Tensor vertex_shift = copy * static_cast<int32_t>(vertices);
  const at::Tensor entry_shift = copy * static_cast<int32_t>(entries);
  const at::Tensor tiled_neighbours =
      at::where(neighbours.unsqueeze(1) >= 0, neighbours.unsqueeze(1) + vertex_shift.view({1, batch, 1, 1}), -1)
          .reshape({d1, batch * vertices, 2});
  const at::Tensor tiled_ptr =
      at::cat({(splat_ptr.slice(0, 0, vertices).unsqueeze(0) + entry_shift.unsqueeze(1)).flatten(),
               at::full({1}, batch * entries, splat_ptr.options())});
  const lattice::LatticeTuple tiled{(offsets + vertex_shift.view({batch, 1, 1})).contiguous(),
                                    std::get<1>(one).expand({batch, points, d1}).contiguous(),
                                    tiled_neighbours.contiguous(),
                                    tiled_ptr,
                                    (splat_entries.unsqueeze(0) + entry_shift.unsqueeze(1)).flatten().contiguous(),
                                    std::get<5>(one).repeat({batch})};
  lattice::record_built_lattice(tiled);
  return tiled;
}

// pydensecrf's x86 build (its SSE path, the one pip installs) embeds each image's points in
// blocks of four and fills the last block with zero-feature points, whose vertices then take part
// in the blur and change what the image's pixels receive: lattice_build's point_block.
constexpr int64_t kPydensecrfPointBlock = 4;

// The lattice pydensecrf builds of features [B, P, d], through the dispatcher.
lattice::LatticeTuple build_crf_lattice(const at::Tensor& features) {
  static const auto build = c10::Dispatcher::singleton()
                                .findSchemaOrThrow(RRM_OP("lattice_build"), "")
                                .typed<lattice::LatticeTuple(const at::Tensor&, int64_t)>();
  return build.call(features, kPydensecrfPointBlock);
}

// What a CPU Gaussian lattice depends on: nothing of the image but the batch and image size.
struct GaussianKey {
  int64_t batch;
  int64_t height;
  int64_t width;
  double sxy;

  bool operator==(const GaussianKey& other) const {
    return batch == other.batch && height == other.height && width == other.width && sxy == other.sxy;
  }
};

// The CPU Gaussian lattices of the last few (batch, size, sxy), reused across calls: a training
// loop runs the CRF on same-size crops every step, and the build is a large part of a CRF call.
// Lattice tensors are only ever read, so callers can share them.
class GaussianLatticeCache {
 public:
  template <typename Build>
  lattice::LatticeTuple get(const GaussianKey& key, const Build& build) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      for (auto it = entries_.begin(); it != entries_.end(); ++it) {
        if (it->first == key) {
          entries_.splice(entries_.begin(), entries_, it);
          return entries_.front().second;
        }
      }
    }
    lattice::LatticeTuple built = build();
    const std::lock_guard<std::mutex> lock(mutex_);
    entries_.emplace_front(key, built);
    if (entries_.size() > kEntries) entries_.pop_back();
    return built;
  }

  void clear() {
    const std::lock_guard<std::mutex> lock(mutex_);
    entries_.clear();
  }

 private:
  static constexpr size_t kEntries = 4;
  std::mutex mutex_;
  std::list<std::pair<GaussianKey, lattice::LatticeTuple>> entries_;  // most recently used first
};

GaussianLatticeCache& gaussian_lattices() {
  static GaussianLatticeCache cache;
  return cache;
}

// The unary of scores into out, both contiguous, over fixed runs of values shared by the
// op's team: ATen operators called inside the team run on one thread, and at 21 labels of a
// 321 x 321 image this took 3 to 4 ms there. Each run calls ATen's clamp and log on its values,
// which are elementwise, so the runs give the bits of one call over the whole tensor.
class UnaryPlan {
 public:
  UnaryPlan(const at::Tensor& scores, const at::Tensor& out) : scores_(scores.view(-1)), out_(out.view(-1)) {}

  static constexpr int64_t kRunValues = 65536;

  int64_t phases() const { return 1; }
  int64_t chunks(int64_t, int64_t) const { return chunks_of(scores_.numel(), kRunValues); }
  void run(int64_t, int64_t, int64_t chunk, int) {
    const int64_t first = chunk * kRunValues, count = std::min(kRunValues, scores_.numel() - first);
    at::Tensor run_out = out_.narrow(0, first, count);
    at::clamp_out(run_out, scores_.narrow(0, first, count), 1e-5, 1.0).log_().neg_();
  }
  void finish(int64_t, int64_t) {}

 private:
  const at::Tensor scores_;
  const at::Tensor out_;
};

// pydensecrf's unary_from_softmax: -log(clip(s, 1e-5, 1)) in the precision of scores. A CPU
// result lives in this thread's scratch (see scratch_buffer) until the call returns.
at::Tensor unary_from_scores(const at::Tensor& scores) {
  if (!is_host(scores.device())) {
    at::Tensor out = at::empty_like(scores, at::MemoryFormat::Contiguous);
    return at::clamp_out(out, scores, 1e-5, 1.0).log_().neg_();
  }
  const at::Tensor out =
      scratch_buffer(Scratch::kCrfEnergies, scores.numel(), scores.scalar_type()).view(scores.sizes());
  UnaryPlan plan(scores.contiguous(), out);
  run_phases(plan, 1, phase_threads(scores.numel(), UnaryPlan::kRunValues));
  return out;
}

}  // namespace

void check_params(const Params& params) {
  check_iterations(params.n_iter);
  check_positive_number(params.gaussian_sxy, "gaussian_sxy");
  check_finite_number(params.gaussian_compat, "gaussian_compat");
  check_positive_number(params.bilateral_sxy, "bilateral_sxy");
  check_positive_number(params.bilateral_srgb, "bilateral_srgb");
  check_finite_number(params.bilateral_compat, "bilateral_compat");
}

int64_t padded_slot_count(int64_t present) {
  const int64_t at_least_one = std::max<int64_t>(present, 1);
  return (at_least_one + kSlotLanes - 1) / kSlotLanes * kSlotLanes;
}

at::Tensor slot_labels_of(const at::Tensor& label_mask, int64_t slots) {
  const int64_t kept = std::min(slots, label_mask.size(1));
  const at::Tensor counts = label_mask.sum(1);
  // A stable descending sort of the mask lists the present labels first, in label order.
  const at::Tensor order =
      std::get<1>(at::sort(label_mask.to(at::kByte), /*stable=*/true, /*dim=*/1, /*descending=*/true));
  const at::Tensor padded = at::constant_pad_nd(order.slice(1, 0, kept), {0, slots - kept}, 0);
  const at::Tensor used = at::arange(slots, counts.options()).unsqueeze(0) < counts.unsqueeze(1);
  return at::where(used, padded, -1).to(at::kInt).contiguous();
}

void check_iterations(int64_t n_iter) {
  TORCH_CHECK_VALUE(n_iter >= 0 && n_iter <= kMaxIterations, "n_iter must be in 0..", kMaxIterations, ", got ",
                    n_iter);
}

void check_label_mask_dtype(const std::optional<at::Tensor>& label_mask) {
  if (!label_mask.has_value()) return;
  TORCH_CHECK_TYPE(label_mask->scalar_type() == at::kBool, "label_mask must have dtype bool, got ",
                   label_mask->scalar_type());
}

void check_label_mask(const std::optional<at::Tensor>& label_mask, int64_t batch, int64_t labels,
                      const at::Tensor& input, const char* input_name) {
  check_label_mask_dtype(label_mask);
  if (!label_mask.has_value()) return;
  const at::Tensor& mask = *label_mask;
  TORCH_CHECK_VALUE(mask.dim() == 2 && mask.size(0) == batch && mask.size(1) == labels,
                    "label_mask must be [B, L] = [", batch, ", ", labels, "], got shape ", shape_of(mask));
  check_same_device(mask, "label_mask", input, input_name);
}

void check_image_dtype(const at::Tensor& image, const char* image_name) {
  TORCH_CHECK_TYPE(image.scalar_type() == at::kByte, image_name, " must have dtype uint8 (RGB 0..255), got ",
                   image.scalar_type());
}

at::Tensor image_channels_last(const at::Tensor& image, const char* image_name, const at::Tensor& input,
                               const char* input_name) {
  const int64_t batch = input.size(0), height = input.size(2), width = input.size(3);
  check_image_dtype(image, image_name);
  TORCH_CHECK_VALUE(image.dim() == 4, image_name, " must be uint8 [B, H, W, 3] or [B, 3, H, W], got shape ",
                    shape_of(image));
  check_same_device(image, image_name, input, input_name);
  TORCH_CHECK_VALUE(image.size(0) == batch, image_name, " has batch size ", image.size(0), " but ", input_name,
                    " has ", batch);
  if (image.size(1) == height && image.size(2) == width && image.size(3) == 3) return image;
  TORCH_CHECK_VALUE(image.size(1) == 3 && image.size(2) == height && image.size(3) == width, image_name,
                    " must be [B, H, W, 3] or [B, 3, H, W] with the H x W = ", height, " x ", width, " of ",
                    input_name, ", got shape ", shape_of(image));
  return image.permute({0, 2, 3, 1});
}

namespace {

// The CPU bilateral features of uint8 rgb [B, H, W, 3] into features [B, P, 5], in one pass
// with the arithmetic of the tensor expressions below (each float divided by the sigma as a
// float); those are five passes, which inside the op's team run on one thread.
void fill_bilateral_features(const at::Tensor& rgb, float sxy, float srgb, float* features) {
  const at::Tensor pixels_rgb = rgb.contiguous();
  const uint8_t* in = pixels_rgb.data_ptr<uint8_t>();
  const int64_t height = rgb.size(1), width = rgb.size(2);
  for (int64_t point = 0; point < rgb.size(0) * height * width; ++point) {
    const int64_t pixel = point % (height * width);
    float* out = features + point * 5;
    out[0] = static_cast<float>(pixel % width) / sxy;
    out[1] = static_cast<float>(pixel / width) / sxy;
    for (int c = 0; c < 3; ++c) out[2 + c] = static_cast<float>(in[point * 3 + c]) / srgb;
  }
}

// The pixel positions (x, y) of rgb [B, H, W, 3] as float [1, P, 2] on its device.
at::Tensor pixel_positions(const at::Tensor& rgb) {
  const int64_t height = rgb.size(1), width = rgb.size(2);
  const at::TensorOptions floats = rgb.options().dtype(at::kFloat);
  const at::Tensor xs = at::arange(width, floats).view({1, width}).expand({height, width});
  const at::Tensor ys = at::arange(height, floats).view({height, 1}).expand({height, width});
  return at::stack({xs, ys}, -1).reshape({1, height * width, 2});
}

// The bilateral features [B, P, 5] of rgb [B, H, W, 3], ((x, y) / sxy, rgb / srgb). A CPU
// result lives in this thread's scratch (see scratch_buffer).
at::Tensor bilateral_features_of(const at::Tensor& rgb, double sxy, double srgb) {
  const int64_t batch = rgb.size(0), pixels = rgb.size(1) * rgb.size(2);
  if (is_host(rgb.device())) {
    at::Tensor features = scratch_buffer(Scratch::kCrfFeatures, batch * pixels * 5, at::kFloat);
    fill_bilateral_features(rgb, static_cast<float>(sxy), static_cast<float>(srgb), features.data_ptr<float>());
    return features.view({batch, pixels, 5});
  }
  at::Tensor features = at::empty({batch, pixels, 5}, rgb.options().dtype(at::kFloat));
  features.narrow(2, 0, 2).copy_((pixel_positions(rgb) / sxy).expand({batch, pixels, 2}));
  features.narrow(2, 2, 3).copy_(rgb.reshape({batch, pixels, 3})).div_(srgb);
  return features;
}

}  // namespace

std::pair<lattice::LatticeTuple, lattice::LatticeTuple> crf_lattices(const at::Tensor& rgb, const Params& params) {
  const int64_t batch = rgb.size(0), height = rgb.size(1), width = rgb.size(2);
  const at::Tensor bilateral_features = bilateral_features_of(rgb, params.bilateral_sxy, params.bilateral_srgb);
  const auto build_gaussian = [&] {
    return tile_lattice(build_crf_lattice(pixel_positions(rgb) / params.gaussian_sxy), batch);
  };
  if (!is_host(rgb.device())) return {build_gaussian(), build_crf_lattice(bilateral_features)};
  // Only CPU lattices are cached: a GPU build is quick, and a lattice built on one CUDA stream
  // and read on another would need synchronising. The CPU bilateral lattice is used once, by
  // the caller, so it is built in scratch memory rather than faulted in afresh every call.
  return {gaussian_lattices().get({batch, height, width, params.gaussian_sxy}, build_gaussian),
          lattice::lattice_build_transient_cpu(bilateral_features, kPydensecrfPointBlock)};
}

void clear_gaussian_lattice_cache() { gaussian_lattices().clear(); }

namespace {

// The CPU mean field splats stripe by stripe (see crf.h); the CUDA one gathers.
int64_t partial_splats(const MeanfieldProblem& problem, const at::Device& device) {
  return is_host(device) ? pixel_stripes(problem.points) : 0;
}

}  // namespace

at::Tensor allocate_workspace(const MeanfieldProblem& problem, const lattice::LatticeView& gaussian,
                              const lattice::LatticeView& bilateral, const at::TensorOptions& options) {
  const int64_t floats = workspace_floats(gaussian.num_points, slot_channels(problem), gaussian.num_vertices,
                                          bilateral.num_vertices, partial_splats(problem, options.device()));
  if (!is_host(options.device())) return at::empty({floats}, options.dtype(at::kFloat));
  // CUDA's caching allocator already reuses device memory.
  return scratch_buffer(Scratch::kMeanfieldWorkspace, floats, at::kFloat);
}

MeanfieldWorkspace carve_workspace(at::Tensor& workspace, const MeanfieldProblem& problem,
                                   const lattice::LatticeView& gaussian, const lattice::LatticeView& bilateral) {
  return carve_workspace(workspace.data_ptr<float>(), gaussian.num_points, slot_channels(problem),
                         gaussian.num_vertices, bilateral.num_vertices, partial_splats(problem, workspace.device()));
}

MeanfieldInputs checked_meanfield_inputs(const at::Tensor& unary, const std::optional<at::Tensor>& label_mask,
                                         const lattice::LatticeTuple& gaussian,
                                         const lattice::LatticeTuple& bilateral, double gaussian_compat,
                                         double bilateral_compat, int64_t n_iter,
                                         const std::optional<at::Tensor>& compat_matrices) {
  check_dtype(unary, at::kFloat, "unary");
  check_label_mask_dtype(label_mask);
  if (compat_matrices.has_value()) check_dtype(*compat_matrices, at::kFloat, "compat_matrices");
  check_dim(unary, 3, "unary", "[B, L, P]");
  TORCH_CHECK_VALUE(unary.size(1) >= 1, "unary must have at least one label (L >= 1), got shape ", shape_of(unary));
  check_label_mask(label_mask, unary.size(0), unary.size(1), unary, "unary");
  check_iterations(n_iter);
  check_finite_number(gaussian_compat, "gaussian_compat");
  check_finite_number(bilateral_compat, "bilateral_compat");
  check_lattice(gaussian, "gaussian", unary);
  check_lattice(bilateral, "bilateral", unary);
  if (compat_matrices.has_value()) {
    const at::Tensor& mu = *compat_matrices;
    TORCH_CHECK_VALUE(mu.dim() == 3 && mu.size(0) == 2 && mu.size(1) == unary.size(1) && mu.size(2) == unary.size(1),
                      "compat_matrices must be [2, L, L] = [2, ", unary.size(1), ", ", unary.size(1),
                      "], got shape ", shape_of(mu));
    check_same_device(mu, "compat_matrices", unary, "unary");
  }
  const int64_t present = checked_present_labels(unary, label_mask);
  if (compat_matrices.has_value()) {
    TORCH_CHECK_VALUE(padded_slot_count(present) <= kMaxCompatSlots, "compat_matrices supports at most ",
                      kMaxCompatSlots, " present labels per image, got ", present);
    checked_finite_minimum(*compat_matrices, "compat_matrices");
  }

  MeanfieldInputs inputs;
  inputs.unary = unary.contiguous();
  if (unary.size(0) == 0) {
    inputs.slot_labels = at::empty({0, 0}, unary.options().dtype(at::kInt));
  } else {
    const at::Tensor mask =
        label_mask.value_or(at::ones({unary.size(0), unary.size(1)}, unary.options().dtype(at::kBool)));
    inputs.slot_labels = slot_labels_of(mask, padded_slot_count(present));
  }
  inputs.gaussian = lattice::contiguous_lattice(gaussian);
  inputs.bilateral = lattice::contiguous_lattice(bilateral);
  if (compat_matrices.has_value()) inputs.compat_matrices = compat_matrices->contiguous();
  return inputs;
}

MeanfieldProblem make_problem(const MeanfieldInputs& inputs, double gaussian_compat, double bilateral_compat) {
  MeanfieldProblem problem;
  problem.unary = inputs.unary.data_ptr<float>();
  problem.slot_labels = inputs.slot_labels.data_ptr<int32_t>();
  problem.batch = inputs.unary.size(0);
  problem.points = inputs.unary.size(2);
  problem.labels = inputs.unary.size(1);
  problem.slots = inputs.slot_labels.size(1);
  problem.groups = 1;
  problem.gaussian_compat = static_cast<float>(gaussian_compat);
  problem.bilateral_compat = static_cast<float>(bilateral_compat);
  if (inputs.compat_matrices.defined()) problem.compat_matrices = inputs.compat_matrices.data_ptr<float>();
  return problem;
}

namespace {

at::Tensor run_dense_crf(const std::optional<at::Tensor>& scores, const at::Tensor& image,
                         const std::optional<at::Tensor>& unary, int64_t n_iter, double gaussian_sxy,
                         double gaussian_compat, double bilateral_sxy, double bilateral_srgb, double bilateral_compat,
                         const std::optional<at::Tensor>& label_mask) {
  TORCH_CHECK_VALUE(scores.has_value() != unary.has_value(), "dense_crf takes exactly one of scores and unary, got ",
                    scores.has_value() ? "both" : "neither");
  const at::Tensor& input = scores.has_value() ? *scores : *unary;
  const char* input_name = scores.has_value() ? "scores" : "unary";
  check_floating(input, input_name);
  check_image_dtype(image, "image");
  check_label_mask_dtype(label_mask);
  check_dim(input, 4, input_name, "[B, L, H, W]");
  TORCH_CHECK_VALUE(input.size(1) >= 1, input_name, " must have at least one label (L >= 1), got shape ",
                    shape_of(input));
  const int64_t batch = input.size(0), labels = input.size(1), height = input.size(2), width = input.size(3);
  const int64_t pixels = height * width;
  // The bilateral lattice (d = 5) has the most entries; checked before anything is read or allocated.
  const int64_t bilateral_entries = batch * (pixels + lattice::padding_points(pixels, kPydensecrfPointBlock)) * 6;
  TORCH_CHECK_VALUE(bilateral_entries < lattice::kMaxEntries, "dense_crf: ", batch, " images of ", height, " x ",
                    width, " pixels are too many for int32 lattice indices: their bilateral lattice would have ",
                    bilateral_entries, " entries, at most ", lattice::kMaxEntries - 1);
  const at::Tensor rgb = image_channels_last(image, "image", input, input_name);
  check_label_mask(label_mask, input.size(0), input.size(1), input, input_name);
  const Params params{n_iter, gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb, bilateral_compat};
  check_params(params);
  const double position_reach = static_cast<double>(std::max<int64_t>(std::max(height, width) - 1, 0));
  const std::string image_size = " for a " + std::to_string(height) + " x " + std::to_string(width) + " image";
  check_sigma_range(gaussian_sxy, "gaussian_sxy", position_reach, image_size, 2);
  check_sigma_range(bilateral_sxy, "bilateral_sxy", position_reach, image_size, 5);
  check_sigma_range(bilateral_srgb, "bilateral_srgb", 255.0, " for intensities 0..255", 5);
  const double minimum = checked_finite_minimum(input, input_name);
  TORCH_CHECK_VALUE(unary.has_value() || minimum >= 0,
                    "scores must be non-negative (probabilities in [0, 1]), got a minimum of ", minimum);
  const at::Tensor energies = (scores.has_value() ? unary_from_scores(input) : input)
                                  .to(at::kFloat)
                                  .reshape({batch, labels, pixels});

  static const auto meanfield =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow(RRM_OP("dense_crf_meanfield"), "")
          .typed<at::Tensor(const at::Tensor&, const std::optional<at::Tensor>&, at::TensorList, at::TensorList,
                            double, double, int64_t, const std::optional<at::Tensor>&)>();
  const auto [gaussian, bilateral] = crf_lattices(rgb, params);
  const at::Tensor q = meanfield.call(energies, label_mask, lattice::as_tensor_list(gaussian),
                                      lattice::as_tensor_list(bilateral), gaussian_compat, bilateral_compat, n_iter,
                                      std::nullopt);
  return q.view({batch, labels, height, width});
}

}  // namespace

at::Tensor dense_crf(const std::optional<at::Tensor>& scores, const at::Tensor& image,
                     const std::optional<at::Tensor>& unary, int64_t n_iter, double gaussian_sxy,
                     double gaussian_compat, double bilateral_sxy, double bilateral_srgb, double bilateral_compat,
                     const std::optional<at::Tensor>& label_mask) {
  const auto run = [&] {
    return run_dense_crf(scores, image, unary, n_iter, gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb,
                         bilateral_compat, label_mask);
  };
  const at::Tensor& input = scores.has_value() ? *scores : (unary.has_value() ? *unary : image);
  if (!is_host(input.device())) return run();
  // The team's size grows with n_iter: checked before it is sized.
  check_iterations(n_iter);
  // On the CPU the op's runs and ATen calls share one team (phase_runner.h): one parallel region.
  at::Tensor q;
  with_team(meanfield_threads(input.numel(), n_iter), [&] { q = run(); });
  return q;
}

RRM_DEVICE_GENERIC_KERNELS(m) { m.impl("dense_crf", &dense_crf); }

}  // namespace crf
}  // namespace rrm
