// CUDA launchers of the lattice op family: raw pointers and a stream, no ATen, so the .cu
// compiles with plain nvcc. Each returns nullptr on success or a CUDA error string.
#pragma once

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "common/temp_allocator.h"
#include "lattice/lattice.h"

namespace rrm {
namespace lattice {
namespace cuda {

// Stage 1: embed every point, insert its d+1 vertex keys, elect the smallest entry of each
// key as owner and number the owners: vertex_of_owner [E+1] gets an exclusive scan of the
// owner flags, so vertex_of_owner[E] is the vertex count M (read by the caller).
// Buffers: keys int32 [E*d], weights float [E], table int32 [B*capacity] (set to -1 here),
// slot int64 [E], vertex_of_owner int32 [E+1].
const char* build_vertices(const float* features, int64_t batch, int64_t points, int d, int32_t* keys,
                           float* weights, int32_t* table, int64_t* slot, int32_t* vertex_of_owner,
                           const TempAllocator& temp, cudaStream_t stream);

// Stage 2, once M is known: offsets [E], owners [M] (scratch), neighbours [d+1, M, 2],
// splat_ptr [M+1], splat_entries [E], splat_weights [E] (from the weights of stage 1).
// Both stages take their temporaries (CUB storage, the sort's buffers) from `temp`.
const char* build_structure(int64_t batch, int64_t points, int d, int32_t vertices, const int32_t* keys,
                            const int32_t* table, const int64_t* slot, const int32_t* vertex_of_owner,
                            const float* weights, int32_t* offsets, int32_t* owners, int32_t* neighbours,
                            int32_t* splat_ptr, int32_t* splat_entries, float* splat_weights,
                            const TempAllocator& temp, cudaStream_t stream);

// values [num_points, C] -> out [num_points, C], with vertex buffers a and b of [M, C].
// values is read only by the splat kernel, so out may be values itself.
template <typename scalar_t>
const char* filter(const LatticeView& lat, const scalar_t* values, int64_t channels, bool reverse,
                   scalar_t* buffer_a, scalar_t* buffer_b, scalar_t* out, cudaStream_t stream);

// The splat and blur of filter, of point_scale[point] * values (see splat_vertex; values as
// they are if point_scale is null); *blurred is set to the buffer, a or b, holding the result.
const char* splat_blur(const LatticeView& lat, const float* values, const float* point_scale, int64_t channels,
                       float* buffer_a, float* buffer_b, const float** blurred, cudaStream_t stream);

}  // namespace cuda
}  // namespace lattice
}  // namespace rrm
