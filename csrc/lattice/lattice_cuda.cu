// CUDA launchers of the lattice op family over the shared bodies of lattice.h.
// Integer atomics only (hash claims, owner election, CSR counts); every float is written by
// exactly one thread in a fixed order, so results are deterministic.
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

#include "common/cuda_launch.cuh"
#include "common/dispatch.h"
#include "lattice/lattice_cuda.h"

namespace rrm {
namespace lattice {
namespace cuda {
namespace {

template <int D>
__global__ void embed_kernel(const float* features, int64_t num_points, int d, ElevationScale scale, int32_t* keys,
                             float* weights) {
  const int64_t i = global_index();
  if (i >= num_points) return;
  embed_point<D>(features + i * d, d, scale, keys + i * (d + 1) * d, weights + i * (d + 1));
}

template <int D>
__global__ void insert_kernel(const int32_t* keys, int d, int64_t entries, int64_t per_item, int64_t capacity,
                              int32_t* table, int64_t* slot) {
  const int64_t e = global_index();
  if (e >= entries) return;
  const int64_t item = e / per_item;
  const uint32_t mask = static_cast<uint32_t>(capacity - 1);
  slot[e] = item * capacity + hash_insert<D>(table + item * capacity, mask, keys, d, static_cast<int32_t>(e));
}

__global__ void elect_owner_kernel(const int64_t* slot, int64_t entries, int32_t* table) {
  const int64_t e = global_index();
  if (e >= entries) return;
  atomic_min_i32(table + slot[e], static_cast<int32_t>(e));
}

__global__ void owner_flag_kernel(const int32_t* table, const int64_t* slot, int64_t entries, int32_t* flags) {
  const int64_t e = global_index();
  if (e > entries) return;
  flags[e] = (e < entries && table[slot[e]] == e) ? 1 : 0;
}

__global__ void offsets_kernel(const int32_t* table, const int64_t* slot, const int32_t* vertex_of_owner,
                               int64_t entries, int32_t* offsets, int32_t* owners, int32_t* counts) {
  const int64_t e = global_index();
  if (e >= entries) return;
  const int32_t owner = table[slot[e]];
  const int32_t vertex = vertex_of_owner[owner];
  offsets[e] = vertex;
  if (owner == e) owners[vertex] = static_cast<int32_t>(e);
  atomicAdd(counts + vertex, 1);
}

template <int D>
__global__ void neighbours_kernel(const int32_t* owners, int32_t vertices, int d, int64_t per_item, int64_t capacity,
                                  const int32_t* table, const int32_t* keys, const int32_t* vertex_of_owner,
                                  int32_t* neighbours) {
  const int64_t index = global_index();
  if (index >= static_cast<int64_t>(vertices) * (d + 1)) return;
  const int axis = static_cast<int>(index / vertices);
  const int32_t v = static_cast<int32_t>(index % vertices);
  const int32_t owner = owners[v];
  const int64_t item = owner / per_item;
  find_blur_neighbours<D>(table + item * capacity, static_cast<uint32_t>(capacity - 1), keys, d,
                          keys + static_cast<int64_t>(owner) * d, axis, vertex_of_owner, neighbours + index * 2);
}

__global__ void iota_kernel(int64_t n, int32_t* out) {
  const int64_t i = global_index();
  if (i < n) out[i] = static_cast<int32_t>(i);
}

__global__ void splat_weights_kernel(const int32_t* splat_entries, const float* weights, int64_t entries,
                                     float* splat_weights) {
  const int64_t k = global_index();
  if (k < entries) splat_weights[k] = weights[splat_entries[k]];
}

template <typename scalar_t>
__global__ void splat_kernel(LatticeView lat, const scalar_t* values, const scalar_t* point_scale, int64_t channels,
                             scalar_t* vertex_values) {
  const int64_t index = global_index();
  if (index >= static_cast<int64_t>(lat.num_vertices) * channels) return;
  const int64_t c = index % channels;
  splat_vertex<scalar_t, 1>(lat, static_cast<int32_t>(index / channels), values, points_last(channels), point_scale,
                            channels, c, vertex_values);
}

template <typename scalar_t>
__global__ void blur_kernel(LatticeView lat, int axis, const scalar_t* src, int64_t channels, scalar_t* dst) {
  const int64_t index = global_index();
  if (index >= static_cast<int64_t>(lat.num_vertices) * channels) return;
  const int64_t c = index % channels;
  blur_vertex<scalar_t, 1>(lat, static_cast<int32_t>(index / channels), axis, src, channels, c, dst);
}

template <typename scalar_t>
__global__ void slice_kernel(LatticeView lat, const scalar_t* vertex_values, int64_t channels, scalar_t alpha,
                             scalar_t* out) {
  const int64_t index = global_index();
  if (index >= lat.num_points * channels) return;
  const int64_t c = index % channels;
  slice_point<scalar_t, 1>(lat, index / channels, vertex_values, channels, c, alpha, out);
}

int bits_for(int64_t max_value) {
  int bits = 1;
  while (bits < 31 && (int64_t{1} << bits) <= max_value) ++bits;
  return bits;
}

}  // namespace

const char* build_vertices(const float* features, int64_t batch, int64_t points, int d, int32_t* keys,
                           float* weights, int32_t* table, int64_t* slot, int32_t* vertex_of_owner,
                           const TempAllocator& temp, cudaStream_t stream) {
  const int64_t per_item = points * (d + 1);
  const int64_t entries = batch * per_item;
  const int64_t capacity = hash_table_capacity(per_item);
  RRM_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(table, 0xff, sizeof(int32_t) * batch * capacity, stream));
  const ElevationScale scale = elevation_scale(d);
  RRM_DISPATCH_FEATURE_DIM(d, [&] {
    RRM_LAUNCH(embed_kernel<FEATURE_DIM>, blocks_for(batch * points), kThreads, stream)(
        features, batch * points, d, scale, keys, weights);
    RRM_LAUNCH(insert_kernel<FEATURE_DIM>, blocks_for(entries), kThreads, stream)(
        keys, d, entries, per_item, capacity, table, slot);
  });
  RRM_LAUNCH(elect_owner_kernel, blocks_for(entries), kThreads, stream)(slot, entries, table);
  // The flags reuse vertex_of_owner's memory; the scan runs in place.
  RRM_LAUNCH(owner_flag_kernel, blocks_for(entries + 1), kThreads, stream)(table, slot, entries, vertex_of_owner);
  RRM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return with_temp_storage(temp, [&](void* storage, size_t& bytes) {
    return cub::DeviceScan::ExclusiveSum(storage, bytes, vertex_of_owner, vertex_of_owner, entries + 1, stream);
  });
}

const char* build_structure(int64_t batch, int64_t points, int d, int32_t vertices, const int32_t* keys,
                            const int32_t* table, const int64_t* slot, const int32_t* vertex_of_owner,
                            const float* weights, int32_t* offsets, int32_t* owners, int32_t* neighbours,
                            int32_t* splat_ptr, int32_t* splat_entries, float* splat_weights,
                            const TempAllocator& temp, cudaStream_t stream) {
  const int64_t per_item = points * (d + 1);
  const int64_t entries = batch * per_item;
  const int64_t capacity = hash_table_capacity(per_item);
  RRM_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(splat_ptr, 0, sizeof(int32_t) * (vertices + 1), stream));
  RRM_LAUNCH(offsets_kernel, blocks_for(entries), kThreads, stream)(table, slot, vertex_of_owner, entries, offsets,
                                                                     owners, splat_ptr);
  RRM_DISPATCH_FEATURE_DIM(d, [&] {
    RRM_LAUNCH(neighbours_kernel<FEATURE_DIM>, blocks_for(static_cast<int64_t>(vertices) * (d + 1)), kThreads,
               stream)(owners, vertices, d, per_item, capacity, table, keys, vertex_of_owner, neighbours);
  });
  RRM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  const char* error = with_temp_storage(temp, [&](void* storage, size_t& bytes) {
    return cub::DeviceScan::ExclusiveSum(storage, bytes, splat_ptr, splat_ptr, static_cast<int64_t>(vertices) + 1,
                                         stream);
  });
  if (error) return error;

  // A stable radix sort of (vertex, entry) pairs by vertex is the device counting sort:
  // each vertex's entries stay in ascending order.
  int32_t* entry_ids = temp.take<int32_t>(entries);
  int32_t* sorted_vertices = temp.take<int32_t>(entries);
  RRM_LAUNCH(iota_kernel, blocks_for(entries), kThreads, stream)(entries, entry_ids);
  error = with_temp_storage(temp, [&](void* storage, size_t& bytes) {
    return cub::DeviceRadixSort::SortPairs(storage, bytes, offsets, sorted_vertices, entry_ids, splat_entries,
                                           entries, 0, bits_for(vertices), stream);
  });
  if (error) return error;
  RRM_LAUNCH(splat_weights_kernel, blocks_for(entries), kThreads, stream)(splat_entries, weights, entries,
                                                                           splat_weights);
  RRM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return nullptr;
}

// Splat and blur; returns the buffer (a or b) holding the blurred vertex values.
template <typename scalar_t>
scalar_t* launch_splat_blur(const LatticeView& lat, const scalar_t* values, const scalar_t* point_scale,
                            int64_t channels, bool reverse, scalar_t* buffer_a, scalar_t* buffer_b,
                            cudaStream_t stream) {
  const int64_t vertex_work = static_cast<int64_t>(lat.num_vertices) * channels;
  RRM_LAUNCH(splat_kernel<scalar_t>, blocks_for(vertex_work), kThreads, stream)(lat, values, point_scale, channels,
                                                                                 buffer_a);
  scalar_t* src = buffer_a;
  scalar_t* dst = buffer_b;
  for (int step = 0; step < lat.d1; ++step) {
    const int axis = reverse ? lat.d1 - 1 - step : step;
    RRM_LAUNCH(blur_kernel<scalar_t>, blocks_for(vertex_work), kThreads, stream)(lat, axis, src, channels, dst);
    scalar_t* swap = src;
    src = dst;
    dst = swap;
  }
  return src;
}

template <typename scalar_t>
const char* filter(const LatticeView& lat, const scalar_t* values, int64_t channels, bool reverse,
                   scalar_t* buffer_a, scalar_t* buffer_b, scalar_t* out, cudaStream_t stream) {
  const scalar_t* blurred = launch_splat_blur<scalar_t>(lat, values, nullptr, channels, reverse, buffer_a, buffer_b,
                                                        stream);
  RRM_LAUNCH(slice_kernel<scalar_t>, blocks_for(lat.num_points * channels), kThreads, stream)(
      lat, blurred, channels, slice_scale<scalar_t>(lat.d1 - 1), out);
  RRM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return nullptr;
}

const char* splat_blur(const LatticeView& lat, const float* values, const float* point_scale, int64_t channels,
                       float* buffer_a, float* buffer_b, const float** blurred, cudaStream_t stream) {
  *blurred = launch_splat_blur<float>(lat, values, point_scale, channels, false, buffer_a, buffer_b, stream);
  RRM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return nullptr;
}

template const char* filter<float>(const LatticeView&, const float*, int64_t, bool, float*, float*, float*,
                                   cudaStream_t);
template const char* filter<double>(const LatticeView&, const double*, int64_t, bool, double*, double*, double*,
                                    cudaStream_t);

}  // namespace cuda
}  // namespace lattice
}  // namespace rrm
