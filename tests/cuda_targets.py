"""Where the CUDA kernels run in the tests: the emulated CUDA build on the CPU (always), and a
GPU when the machine has one (skipped elsewhere).

A test that takes the ``target`` fixture runs once per target and compares the target's result
with the CPU kernels' (``torch.ops.rrm_ops`` on CPU tensors).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import pytest
import torch

import rrm_ops.emulation as emulation


@dataclass(frozen=True)
class Target:
    """name: "emulated" or "cuda"; ops: the op namespace whose CUDA kernels run there."""

    name: str
    ops: Any
    device: torch.device

    def to(self, value: Any) -> Any:
        """Tensors (also inside tuples and lists) moved to the target's device."""
        if isinstance(value, torch.Tensor):
            return value.to(self.device)
        if isinstance(value, (tuple, list)):
            return type(value)(self.to(v) for v in value)
        return value

    def api(self) -> AbstractContextManager:
        """Inside it, the Python API of rrm_ops runs on this target's kernels."""
        return emulation.emulated() if self.name == "emulated" else nullcontext()


def _cuda_target() -> Target:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the variants against the real CUDA kernels run on a machine with a GPU")
    if not torch._C._dispatch_has_kernel_for_dispatch_key("rrm_ops::lattice_build", "CUDA"):
        pytest.skip("rrm_ops was built without its CUDA kernels (torch or nvcc without CUDA at build time)")
    return Target("cuda", torch.ops.rrm_ops, torch.device("cuda"))


@pytest.fixture(params=["emulated", "cuda"])
def target(request) -> Target:
    """The emulated CUDA kernels, or the real ones on a GPU."""
    if request.param == "cuda":
        return _cuda_target()
    return Target("emulated", emulation.ops, torch.device("cpu"))


@pytest.fixture(autouse=True)
def uninitialised_memory_filled():
    """Tensors the kernels are to fill come filled with NaN or the largest integer (torch's
    deterministic fill of torch.empty), so an element a kernel fails to write shows, rather than
    holding by chance what a previous call left in recycled memory."""
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_filling = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.use_deterministic_algorithms(was_deterministic)
    torch.utils.deterministic.fill_uninitialized_memory = was_filling


def on_cpu(value: Any) -> Any:
    """A result (tensor, or tuple of them) on the CPU for comparison."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    return type(value)(on_cpu(v) for v in value)


def assert_bitwise_equal(actual: Any, expected: Any) -> None:
    """Same shapes, dtypes and values, NaNs included (signed zeros compare equal)."""
    actual, expected = on_cpu(actual), on_cpu(expected)
    if isinstance(expected, torch.Tensor):
        expected, actual = (expected,), (actual,)
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert (a.shape, a.dtype) == (e.shape, e.dtype), f"output {i}: {a.dtype} {a.shape} vs {e.dtype} {e.shape}"
        equal = (a == e) | (a != a) & (e != e) if a.is_floating_point() else a == e
        mismatches = int((~equal).sum())
        assert mismatches == 0, f"output {i}: {mismatches} of {e.numel()} elements differ"


__all__ = ["Target", "assert_bitwise_equal", "on_cpu", "target", "uninitialised_memory_filled"]
