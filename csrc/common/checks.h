// Argument validation shared by the CPU launchers and the CUDA glue (ATen side only).
#pragma once

#include <ATen/ATen.h>

#include <string>

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
  TORCH_CHECK(t.dim() == dim, name, " must be ", dim, "-D ", layout, ", got shape ", shape_of(t));
}

inline void check_dtype(const at::Tensor& t, at::ScalarType dtype, const char* name) {
  TORCH_CHECK(t.scalar_type() == dtype, name, " must have dtype ", dtype, ", got ", t.scalar_type());
}

inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name,
              " must be float32 or float64, got ", t.scalar_type());
}

inline void check_same_device(const at::Tensor& a, const char* a_name, const at::Tensor& b, const char* b_name) {
  TORCH_CHECK(a.device() == b.device(), a_name, " is on ", a.device(), " but ", b_name, " is on ", b.device(),
              "; move them to the same device");
}

// One reduction pass: the extremes of a tensor are finite only if every value is (NaN propagates).
inline void check_finite(const at::Tensor& t, const char* name) {
  if (t.numel() == 0) return;
  const auto [minimum, maximum] = at::aminmax(t);
  TORCH_CHECK(at::isfinite(minimum).item<bool>() && at::isfinite(maximum).item<bool>(), name,
              " contains NaN or infinite values");
}

}  // namespace rrm
