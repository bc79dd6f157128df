// CUDA launcher of prune_reliable_labels over the bodies of prune.h. The per-class quantile
// is an exact order statistic found on the device: each pixel gets a 64-bit key
// (image, class, score bits from the most significant down; positive floats order like their
// bits), one radix sort of the whole batch over the key's used bits puts every (image, class)'s
// candidates in one ascending run, and the run's start and length come from integer counts.
// No host round trip.
#include <cub/device/device_radix_sort.cuh>

#include "common/cuda_launch.cuh"
#include "prune/prune.h"
#include "prune/prune_cuda.h"

namespace rrm {
namespace prune {
namespace cuda {
namespace {

__global__ void summarise_kernel(const float* cams, const float* q_low, const float* q_high,
                                 const int32_t* row_labels, int32_t rows, int64_t batch, int32_t classes,
                                 int64_t pixels, float cam_alpha, float cam_floor, int class_bits,
                                 PixelSummary* summaries, uint64_t* keys, int32_t* occurs_in_low,
                                 int32_t* candidate_counts) {
  const int64_t i = global_index();
  if (i >= batch * pixels) return;
  const int64_t b = i / pixels;
  const int32_t labels = classes + 1;
  const PixelSummary s =
      summarise_pixel(cams + b * classes * pixels, q_low + b * rows * pixels, q_high + b * rows * pixels, classes,
                      pixels, i % pixels, cam_alpha, row_labels == nullptr ? nullptr : row_labels + b * rows, rows);
  summaries[i] = s;
  occurs_in_low[b * labels + s.low] = 1;  // every writer stores the same value
  const uint64_t image = static_cast<uint64_t>(b) << (32 + class_bits);
  if (is_quantile_candidate(s, cam_floor)) {
    keys[i] = image | (static_cast<uint64_t>(s.cam_arg) << 32) | __float_as_uint(s.cam_score);
    atomicAdd(candidate_counts + b * labels + s.cam_arg, 1);
  } else {
    keys[i] = image | (static_cast<uint64_t>(labels) << 32);  // after every candidate of the image
  }
}

__global__ void threshold_kernel(const uint64_t* sorted_keys, const int32_t* occurs_in_low,
                                 const int32_t* candidate_counts, int64_t batch, int32_t classes, int64_t pixels,
                                 double fg_quantile, float bg_sure, float* thresholds) {
  const int64_t i = global_index();
  const int32_t labels = classes + 1;
  if (i >= batch * labels) return;
  const int64_t b = i / labels;
  const int32_t label = static_cast<int32_t>(i % labels);
  const float never = __int_as_float(0x7f800000);
  const int32_t count = candidate_counts[i];
  if (!occurs_in_low[i]) {
    thresholds[i] = never;
  } else if (label == 0) {
    thresholds[i] = bg_sure;
  } else if (count == 0) {
    thresholds[i] = never;
  } else {
    int64_t start = 0;
    for (int32_t k = 1; k < label; ++k) start += candidate_counts[b * labels + k];
    const uint64_t key = sorted_keys[b * pixels + start + quantile_rank(count, fg_quantile)];
    thresholds[i] = __uint_as_float(static_cast<uint32_t>(key & 0xffffffffu));
  }
}

__global__ void label_kernel(const PixelSummary* summaries, const float* thresholds, int64_t batch, int32_t classes,
                             int64_t pixels, float crf_sure, int64_t ignore_index, int64_t* labels, bool* sure) {
  const int64_t i = global_index();
  if (i >= batch * pixels) return;
  const PixelSummary s = summaries[i];
  const float threshold = thresholds[(i / pixels) * (classes + 1) + s.cam_arg];
  labels[i] = reliable_label(s, threshold, crf_sure, ignore_index, sure + i);
}

}  // namespace

const char* prune_reliable_labels(const float* cams, const float* q_low, const float* q_high,
                                  const int32_t* row_labels, int32_t rows, int64_t batch, int32_t classes,
                                  int64_t pixels, const PruneParams& params, int64_t* labels, bool* sure,
                                  const TempAllocator& temp, cudaStream_t stream) {
  const int64_t n = batch * pixels;
  const int64_t table = batch * (classes + 1);
  uint64_t* keys = temp.take<uint64_t>(n);
  uint64_t* sorted_keys = temp.take<uint64_t>(n);
  PixelSummary* summaries = temp.take<PixelSummary>(n);
  // One block for both count tables, so that one memset clears them.
  int32_t* occurs_in_low = temp.take<int32_t>(2 * table);
  int32_t* candidate_counts = occurs_in_low + table;
  float* thresholds = temp.take<float>(table);

  RRM_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(occurs_in_low, 0, 2 * sizeof(int32_t) * table, stream));
  RRM_LAUNCH(summarise_kernel, blocks_for(n), kThreads, stream)(cams, q_low, q_high, row_labels, rows, batch, classes,
                                                                 pixels, params.cam_alpha, params.cam_floor,
                                                                 bit_width(classes + 1), summaries, keys, occurs_in_low,
                                                                 candidate_counts);
  RRM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  // Every image holds `pixels` keys and sorts before the next, so image b's run stays at
  // [b * pixels, (b + 1) * pixels).
  const char* error = with_temp_storage(temp, [&](void* storage, size_t& storage_bytes) {
    return cub::DeviceRadixSort::SortKeys(storage, storage_bytes, keys, sorted_keys, static_cast<int>(n), 0,
                                          sort_key_bits(batch, classes), stream);
  });
  if (error) return error;
  RRM_LAUNCH(threshold_kernel, blocks_for(table), kThreads, stream)(sorted_keys, occurs_in_low, candidate_counts,
                                                                     batch, classes, pixels, params.fg_quantile,
                                                                     params.bg_sure, thresholds);
  RRM_LAUNCH(label_kernel, blocks_for(n), kThreads, stream)(summaries, thresholds, batch, classes, pixels,
                                                             params.crf_sure, params.ignore_index, labels, sure);
  RRM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return nullptr;
}

}  // namespace cuda
}  // namespace prune
}  // namespace rrm
