// ATen -> raw pointer glue for the CUDA lattice launchers (compiled only in CUDA builds).
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

#include "common/checks.h"
#include "common/cuda_errors.h"
#include "common/cuda_scratch.h"
#include "common/device.h"
#include "common/library.h"
#include "lattice/lattice_cuda.h"
#include "lattice/lattice_ops.h"

namespace rrm {
namespace lattice {
namespace {

// One host read: the vertex count, to size the vertex arrays, with whether the features are
// finite. Non-finite features are built as zeros (their keys would overflow), then refused.
LatticeTuple build_cuda(const at::Tensor& unchecked_features) {
  const c10::cuda::CUDAGuard guard(unchecked_features.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t batch = unchecked_features.size(0);
  const int64_t points = unchecked_features.size(1);
  const int d = static_cast<int>(unchecked_features.size(2));
  const int64_t entries = batch * points * (d + 1);
  const at::TensorOptions floats = unchecked_features.options();
  const at::TensorOptions ints = floats.dtype(at::kInt);

  at::Tensor offsets = at::empty({batch, points, d + 1}, ints);
  at::Tensor weights = at::empty({batch, points, d + 1}, floats);
  at::Tensor splat_entries = at::empty({entries}, ints);
  at::Tensor splat_weights = at::empty({entries}, floats);
  if (entries == 0) {
    return {offsets, weights, at::empty({d + 1, 0, 2}, ints), at::zeros({1}, ints), splat_entries, splat_weights};
  }
  const at::Tensor finite = at::isfinite(unchecked_features);
  const at::Tensor features = at::where(finite, unchecked_features, 0.f);
  at::Tensor keys = at::empty({entries, d}, ints);
  at::Tensor table = at::empty({batch * hash_table_capacity(points * (d + 1))}, ints);
  at::Tensor slot = at::empty({entries}, ints.dtype(at::kLong));
  at::Tensor vertex_of_owner = at::empty({entries + 1}, ints);
  DeviceScratch scratch(unchecked_features.device());
  check_launch(cuda::build_vertices(features.data_ptr<float>(), batch, points, d, keys.data_ptr<int32_t>(),
                                    weights.data_ptr<float>(), table.data_ptr<int32_t>(), slot.data_ptr<int64_t>(),
                                    vertex_of_owner.data_ptr<int32_t>(), scratch.allocator(), stream),
               "lattice_build (vertices)");
  const std::vector<double> read = scalars_on_host({vertex_of_owner[entries], finite.all()});
  TORCH_CHECK(read[1] != 0, "features contains NaN or infinite values");
  const int32_t vertices = static_cast<int32_t>(read[0]);

  at::Tensor owners = at::empty({vertices}, ints);
  at::Tensor neighbours = at::empty({d + 1, vertices, 2}, ints);
  at::Tensor splat_ptr = at::empty({static_cast<int64_t>(vertices) + 1}, ints);
  check_launch(cuda::build_structure(batch, points, d, vertices, keys.data_ptr<int32_t>(), table.data_ptr<int32_t>(),
                                     slot.data_ptr<int64_t>(), vertex_of_owner.data_ptr<int32_t>(),
                                     weights.data_ptr<float>(), offsets.data_ptr<int32_t>(),
                                     owners.data_ptr<int32_t>(), neighbours.data_ptr<int32_t>(),
                                     splat_ptr.data_ptr<int32_t>(), splat_entries.data_ptr<int32_t>(),
                                     splat_weights.data_ptr<float>(), scratch.allocator(), stream),
               "lattice_build (structure)");
  return {offsets, weights, neighbours, splat_ptr, splat_entries, splat_weights};
}

}  // namespace

// The padding points are built as points with zero features, then their entries are dropped.
LatticeTuple lattice_build_cuda(const at::Tensor& features_in, int64_t point_block) {
  const at::Tensor features = checked_features(features_in);
  const int64_t batch = features.size(0), points = features.size(1);
  const int64_t padding = padding_points(points, point_block);
  if (padding == 0) return build_cuda(features);
  const at::Tensor padded = at::cat({features, at::zeros({batch, padding, features.size(2)}, features.options())}, 1);
  return without_padding_entries(build_cuda(padded), points, padding);
}

namespace {

at::Tensor lattice_filter_cuda(at::TensorList lattice_tensors, const at::Tensor& values_in, bool reverse) {
  const LatticeTuple unchecked = lattice_of(lattice_tensors, "lattice");
  check_lattice_device(unchecked, "", values_in, "values");
  const LatticeTuple lattice = contiguous_lattice(unchecked);
  const at::Tensor values = checked_filter_inputs(lattice, values_in);
  const c10::cuda::CUDAGuard guard(values.device());
  at::Tensor out = at::empty_like(values);
  if (values.numel() == 0) return out;
  const LatticeView lat = make_view(lattice);
  const int64_t channels = values.size(2);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "lattice_filter_cuda", [&] {
    at::Tensor buffer_a = at::empty({lat.num_vertices, channels}, values.options());
    at::Tensor buffer_b = at::empty({lat.num_vertices, channels}, values.options());
    check_launch(cuda::filter<scalar_t>(lat, values.data_ptr<scalar_t>(), channels, reverse,
                                        buffer_a.data_ptr<scalar_t>(), buffer_b.data_ptr<scalar_t>(),
                                        out.data_ptr<scalar_t>(), stream),
                 "lattice_filter");
  });
  return out;
}

}  // namespace

RRM_CUDA_KERNELS(m) {
  m.impl("lattice_build", &lattice_build_cuda);
  m.impl("lattice_filter", &lattice_filter_cuda);
}

}  // namespace lattice
}  // namespace rrm
