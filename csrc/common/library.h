// The library the ops are defined in and the macros their kernels register with.
//
// The regular build defines the ops in rrm_ops and registers each device's kernels under its
// dispatch key. The emulated CUDA build (csrc/emulation, for tests) compiles the same sources
// into a second library, rrm_ops_emu, whose CPU tensors stand for CUDA tensors: there the CUDA
// kernels are registered under the CPU key, the CPU kernels not at all, and composite ops call
// the ops of rrm_ops_emu (and, registered once for every device, take their device branches).
#pragma once

#include <torch/library.h>

// RRM_DEVICE_GENERIC_KERNELS registers kernels that serve every device from one function (composites
// of other ops, which branch on common/device.h's is_host where the CPU needs more), once, under
// CompositeExplicitAutograd: the dispatcher's key for a kernel of every backend that autograd
// does not see through.
#if defined(RRM_EMULATED_CUDA)
#define RRM_LIBRARY_NAME "rrm_ops_emu"
#define RRM_CPU_KERNELS(m) \
  [[maybe_unused]] static void C10_CONCATENATE(rrm_unregistered_cpu_kernels_, C10_UID)(torch::Library & m)
#define RRM_CUDA_KERNELS(m) TORCH_LIBRARY_IMPL(rrm_ops_emu, CPU, m)
#define RRM_DEVICE_GENERIC_KERNELS(m) TORCH_LIBRARY_IMPL(rrm_ops_emu, CompositeExplicitAutograd, m)
#else
#define RRM_LIBRARY_NAME "rrm_ops"
#define RRM_CPU_KERNELS(m) TORCH_LIBRARY_IMPL(rrm_ops, CPU, m)
#define RRM_CUDA_KERNELS(m) TORCH_LIBRARY_IMPL(rrm_ops, CUDA, m)
#define RRM_DEVICE_GENERIC_KERNELS(m) TORCH_LIBRARY_IMPL(rrm_ops, CompositeExplicitAutograd, m)
#endif

// The qualified name of op `name` (a string literal), as the dispatcher looks it up.
#define RRM_OP(name) RRM_LIBRARY_NAME "::" name

namespace rrm {

// Defines every op's schema in `library` (csrc/schemas.cpp).
void define_ops(torch::Library& library);

}  // namespace rrm
