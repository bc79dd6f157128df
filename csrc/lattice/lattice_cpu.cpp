// The lattice ops on the CPU and their registration; the kernels are the build
// (lattice_build_cpu.cpp) and the filter (lattice_filter_cpu.cpp).

#include "common/library.h"
#include "common/phase_runner.h"
#include "lattice/lattice_cpu.h"

namespace rrm {
namespace lattice {

// Each op runs in one team (phase_runner.h): its run and its ATen calls in one parallel region.

LatticeTuple lattice_build_cpu(const at::Tensor& features, int64_t point_block) {
  LatticeTuple lattice;
  with_team(build_threads(features), [&] { lattice = build_cpu(features, point_block, /*transient=*/false); });
  return lattice;
}

LatticeTuple lattice_build_transient_cpu(const at::Tensor& features, int64_t point_block) {
  LatticeTuple lattice;
  with_team(build_threads(features), [&] { lattice = build_cpu(features, point_block, /*transient=*/true); });
  return lattice;
}

at::Tensor lattice_filter_cpu(at::TensorList lattice, const at::Tensor& values, bool reverse) {
  const LatticeTuple tensors = lattice_of(lattice, "lattice");
  at::Tensor out;
  with_team(filter_threads(values), [&] { out = filter_cpu(tensors, values, reverse); });
  return out;
}

RRM_CPU_KERNELS(m) {
  m.impl("lattice_build", &lattice_build_cpu);
  m.impl("lattice_filter", &lattice_filter_cpu);
}

}  // namespace lattice
}  // namespace rrm
