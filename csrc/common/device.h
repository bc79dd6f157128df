// The two things the launchers' ATen code asks of a device: whether its kernels run on the
// host, and reading device values on the host. Both go through here so that the emulated CUDA
// build (csrc/emulation), whose CPU tensors stand for CUDA tensors, takes the CUDA branches and
// counts the host reads.
#pragma once

#include <ATen/ATen.h>

#include <utility>
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

inline std::vector<double> scalars_on_host(const std::vector<at::Tensor>& scalars);

// Device scalars a caller needs on the host later in the call, read together with the next host
// read of the calling thread (scalars_on_host on the same device), which a callee makes anyway,
// rather than in a read of their own. Mining reads the batch's largest present-label count this
// way with its Gaussian lattice build's vertex count. Host tensors are read at once (for free).
// One at a time per thread; values() reads them itself if no read has taken them.
class DeferredScalars {
 public:
  explicit DeferredScalars(std::vector<at::Tensor> scalars) : scalars_(std::move(scalars)) {
    TORCH_INTERNAL_ASSERT(!scalars_.empty() && pending() == nullptr);
    if (is_host(scalars_[0].device())) {
      values_ = scalars_on_host(scalars_);
    } else {
      pending() = this;
    }
  }
  DeferredScalars(const DeferredScalars&) = delete;
  DeferredScalars& operator=(const DeferredScalars&) = delete;
  ~DeferredScalars() {
    if (pending() == this) pending() = nullptr;
  }

  const std::vector<double>& values() {
    if (pending() == this) {
      pending() = nullptr;
      values_ = scalars_on_host(scalars_);
    }
    return values_;
  }

 private:
  friend std::vector<double> scalars_on_host(const std::vector<at::Tensor>& scalars);

  // This thread's scalars waiting for a read, if any.
  static DeferredScalars*& pending() {
    static thread_local DeferredScalars* waiting = nullptr;
    return waiting;
  }

  std::vector<at::Tensor> scalars_;
  std::vector<double> values_;
};

// The values of one-element tensors on one device, as doubles (exact for integers up to 2^53),
// in one host read, which also takes this thread's DeferredScalars on that device.
inline std::vector<double> scalars_on_host(const std::vector<at::Tensor>& scalars) {
  DeferredScalars* deferred = DeferredScalars::pending();
  if (deferred != nullptr && deferred->scalars_[0].device() != scalars.at(0).device()) deferred = nullptr;
  if (deferred != nullptr) DeferredScalars::pending() = nullptr;
  std::vector<at::Tensor> doubles;
  for (const at::Tensor& scalar : scalars) doubles.push_back(scalar.reshape({}).to(at::kDouble));
  if (deferred != nullptr) {
    for (const at::Tensor& scalar : deferred->scalars_) doubles.push_back(scalar.reshape({}).to(at::kDouble));
  }
  const at::Tensor read = to_host(at::stack(doubles));
  const double* values = read.const_data_ptr<double>();
  const size_t own = scalars.size();
  if (deferred != nullptr) deferred->values_.assign(values + own, values + read.numel());
  return {values, values + own};
}

}  // namespace rrm
