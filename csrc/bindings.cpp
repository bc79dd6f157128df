// The rrm_ops library (schemas in schemas.cpp) and the importable module that loads it.
#include <torch/extension.h>

#include "common/library.h"
#include "crf/crf_ops.h"

TORCH_LIBRARY(rrm_ops, m) { rrm::define_ops(m); }

// An importable module so `import rrm_ops._C` loads the library and runs the registrations.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "rrm_ops kernels; use torch.ops.rrm_ops.*";
  m.def("clear_gaussian_lattice_cache", &rrm::crf::clear_gaussian_lattice_cache,
        "Forget the CPU Gaussian lattices dense_crf and reliable_region_labels reuse across calls");
  m.def("max_feature_magnitude", &rrm::lattice::max_feature_magnitude,
        "The largest |feature| lattice_build accepts at feature dimension d");
}
