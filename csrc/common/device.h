// The two things the launchers' ATen code asks of a device: whether its kernels run on the
// host, and reading device values on the host. Both go through here so that the emulated CUDA
// build (csrc/emulation), whose CPU tensors stand for CUDA tensors, takes the CUDA branches and
// counts the host reads.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#if defined(RRM_EMULATED_CUDA)
#include "emulation/control.h"
#endif

namespace rrm {

// Whether the kernels of tensors on `device` run on the host (CPU tensors; none in the
// emulated CUDA build). Every CPU-only branch of code shared by the devices tests this.
inline bool is_host(const at::Device& device) {
#if defined(RRM_EMULATED_CUDA)
  (void)device;
  return false;
#else
  return device.is_cpu();
#endif
}

// `t` as a CPU tensor. For a device tensor this is a device-to-host copy, which waits for the
// device to finish all work queued before it: a host synchronisation. Launcher code reads device
// values only through here (never with .item() or ATen ops whose output size depends on values,
// such as masked_select or nonzero), and reads what it needs at once (scalars_on_host).
inline at::Tensor to_host(const at::Tensor& t) {
  if (is_host(t.device())) return t;
#if defined(RRM_EMULATED_CUDA)
  emulation::record_host_read();
#endif
  return t.to(at::kCPU);
}

// The values of one-element tensors on one device, as doubles (exact for integers up to 2^53),
// in one host read.
inline std::vector<double> scalars_on_host(const std::vector<at::Tensor>& scalars) {
  std::vector<at::Tensor> doubles;
  for (const at::Tensor& scalar : scalars) doubles.push_back(scalar.reshape({}).to(at::kDouble));
  const at::Tensor read = to_host(at::stack(doubles));
  const double* values = read.const_data_ptr<double>();
  return {values, values + read.numel()};
}

}  // namespace rrm
