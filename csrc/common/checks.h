// Argument validation shared by the CPU launchers and the CUDA glue (ATen side only).
//
// Every check names the argument at fault and raises what docs/error-policy.md asks for: a wrong
// dtype is a TypeError in Python (TORCH_CHECK_TYPE), a wrong shape, device or value a ValueError
// (TORCH_CHECK_VALUE). The fake kernels in rrm_ops/_meta.py give the same messages for the
// checks that need no data.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <initializer_list>
#include <string>
#include <vector>

#include "common/device.h"

namespace rrm {

inline std::string shape_of(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) {
    if (i) s += ", ";
    s += std::to_string(t.size(i));
  }
  return s + "]";
}

inline void check_dim(const at::Tensor& t, int64_t dim, const char* name, const char* layout) {
  TORCH_CHECK_VALUE(t.dim() == dim, name, " must be ", dim, "-D ", layout, ", got shape ", shape_of(t));
}

inline void check_dtype(const at::Tensor& t, at::ScalarType dtype, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, name, " must have dtype ", dtype, ", got ", t.scalar_type());
}

inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name,
              " must be float32 or float64, got ", t.scalar_type());
}

inline void check_same_device(const at::Tensor& a, const char* a_name, const at::Tensor& b, const char* b_name) {
  TORCH_CHECK_VALUE(a.device() == b.device(), a_name, " is on ", a.device(), " but ", b_name, " is on ", b.device(),
              "; move them to the same device");
}

struct NamedTensor {
  const at::Tensor& tensor;
  const char* name;
};

// Refuses arguments on more than one device, naming the first one off the first argument's
// device (undefined tensors, absent optional arguments, are skipped). The CUDA glue runs it
// before constructing its CUDAGuard, which on a CPU tensor fails with a message naming no
// argument.
inline void check_one_device(std::initializer_list<NamedTensor> tensors) {
  const NamedTensor& first = *tensors.begin();
  for (const NamedTensor& t : tensors) {
    if (t.tensor.defined()) check_same_device(t.tensor, t.name, first.tensor, first.name);
  }
}

struct Extremes {
  double minimum;
  double maximum;
};

// The minimum and maximum of a non-empty real tensor (NaN if it holds a NaN), from one
// reduction pass and one host read.
inline Extremes extremes_of(const at::Tensor& t) {
  const auto [minimum, maximum] = at::aminmax(t);
  const std::vector<double> read = scalars_on_host({minimum, maximum});
  return {read[0], read[1]};
}

// A tensor is finite only if its extremes are (NaN propagates).
inline void check_finite(const at::Tensor& t, const char* name) {
  if (t.numel() == 0) return;
  const Extremes extremes = extremes_of(t);
  TORCH_CHECK_VALUE(std::isfinite(extremes.minimum) && std::isfinite(extremes.maximum), name,
                    " contains NaN or infinite values");
}

}  // namespace rrm
