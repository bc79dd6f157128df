// The rrm_ops_emu library (the ops' schemas, with the CUDA kernels of the emulated build as its
// CPU kernels) and the module rrm_ops._emulated that loads it and controls the emulation.
#include <torch/extension.h>

#include "common/library.h"
#include "emulation/control.h"
#include "emulation/probes.h"

static_assert(std::string_view(RRM_LIBRARY_NAME) == "rrm_ops_emu", "build the emulation with RRM_EMULATED_CUDA");

TORCH_LIBRARY(rrm_ops_emu, m) { rrm::define_ops(m); }

namespace {

pybind11::dict counters_as_dict() {
  const rrm::emulation::Counters counts = rrm::emulation::counters();
  pybind11::dict result;
  result["host_reads"] = counts.host_reads;
  result["synchronizations"] = counts.synchronizations;
  result["live_allocations"] = counts.live_allocations;
  result["launches"] = counts.launches;
  return result;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace emulation = rrm::emulation;
  namespace py = pybind11;
  m.doc() = "The CUDA kernels of rrm_ops on an emulated CUDA runtime; use torch.ops.rrm_ops_emu.* (tests only)";
  m.def("set_thread_order", &emulation::set_thread_order, py::arg("seed"),
        "Run every launch's threads in a permutation drawn from seed, or in index order for None");
  m.def("counters", &counters_as_dict,
        "Totals since the start: host_reads, synchronizations, live_allocations, launches (per kernel)");
  m.def("thread_order_of", &emulation::thread_order_of, py::arg("blocks"), py::arg("threads"));
  m.def("exclusive_sum", &emulation::exclusive_sum, py::arg("values"), py::arg("in_place"),
        py::arg("allocated_extra") = 0, py::arg("passed_extra") = 0);
  m.def("radix_sort_pairs", &emulation::radix_sort_pairs, py::arg("keys"), py::arg("values"),
        py::arg("unsigned_keys"), py::arg("begin_bit"), py::arg("end_bit"), py::arg("allocated_extra") = 0,
        py::arg("passed_extra") = 0);
  m.def("float_log", &emulation::float_log, py::arg("x"));
  m.def("float_pow", &emulation::float_pow, py::arg("x"), py::arg("y"));
  m.def("radix_sort_keys", &emulation::radix_sort_keys, py::arg("keys"), py::arg("begin_bit"), py::arg("end_bit"),
        py::arg("allocated_extra") = 0, py::arg("passed_extra") = 0);
}
