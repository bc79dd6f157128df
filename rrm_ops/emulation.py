"""The CUDA kernels of rrm_ops run on the CPU through a host emulation of the CUDA runtime (tests).

``rrm_ops._emulated`` is the CUDA build of the extension (the .cu launchers, their glue and the
shared kernel bodies) compiled by the host compiler against ``csrc/emulation``: kernels are
host functions, a launch runs every (block, thread) of its grid one after the other, device
memory is host memory, and CUB's device algorithms are host versions with CUB's interface. Its
ops are ``torch.ops.rrm_ops_emu.<op>``, with the schemas of ``torch.ops.rrm_ops``, for every op
with a CUDA kernel; they take CPU tensors and run exactly the code paths a CUDA tensor would.
The build is made by ``RRM_EMULATION=1`` (``tools/install.sh --test``); see docs/testing.md.

    import rrm_ops.emulation as emulation
    with emulation.counting() as counts:
        torch.ops.rrm_ops_emu.lattice_build(features, 1)
    counts.host_syncs, counts.launches
    with emulation.emulated():          # the Python API (Lattice, dense_crf, ...) on rrm_ops_emu
        loss = rrm_ops.DenseEnergyLoss()(images, probs, rois, labels)
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch

from rrm_ops._library import using
from rrm_ops.lattice import register_lattice_filter_autograd

try:
    from rrm_ops import _emulated
except ImportError as error:
    raise ImportError(
        "rrm_ops._emulated (the emulated CUDA kernels the tests use) is not built: run "
        "`bash tools/install.sh --test`, or `RRM_EMULATION=1 python setup.py build_ext --inplace` "
        f"(original error: {error})"
    ) from error

LIBRARY = "rrm_ops_emu"
ops = torch.ops.rrm_ops_emu
register_lattice_filter_autograd(LIBRARY)


def set_thread_order(seed: int | None) -> None:
    """Run the threads of every following launch in a random permutation of (block, thread)
    drawn from ``seed`` and the launch's position since this call, or in index order for None.
    The byte that fills fresh device allocations changes with the seed as well."""
    if seed is not None and not 0 <= seed < 2**64:
        raise ValueError(f"seed must be None or in [0, 2**64), got {seed}")
    _emulated.set_thread_order(seed)


@dataclass
class Counts:
    """What ran inside a :func:`counting` block.

    host_reads: reads of device values on the host (each waits for the device).
    synchronizations: explicit waits for the device (stream or device synchronisations).
    launches: kernel name (without template arguments) or CUB algorithm -> times run.
    live_allocations: emulated device allocations made and not freed.
    """

    host_reads: int = 0
    synchronizations: int = 0
    launches: dict[str, int] = field(default_factory=dict)
    live_allocations: int = 0

    @property
    def host_syncs(self) -> int:
        """The host synchronisations: host reads and explicit synchronisations."""
        return self.host_reads + self.synchronizations


@contextmanager
def counting() -> Iterator[Counts]:
    """Counts the host reads, synchronisations, launches and allocations of the emulated kernels
    inside the block; the yielded :class:`Counts` is filled in when the block ends."""
    counts = Counts()
    before = _emulated.counters()
    try:
        yield counts
    finally:
        after = _emulated.counters()
        counts.host_reads = after["host_reads"] - before["host_reads"]
        counts.synchronizations = after["synchronizations"] - before["synchronizations"]
        counts.live_allocations = after["live_allocations"] - before["live_allocations"]
        launches = Counter(after["launches"])
        launches.subtract(before["launches"])
        counts.launches = {name: n for name, n in sorted(launches.items()) if n}


@contextmanager
def emulated() -> Iterator[None]:
    """Runs the Python API of rrm_ops (``Lattice``, ``dense_crf``, ``mean_field``,
    ``reliable_region_labels``, ``DenseEnergyLoss`` ...) on the emulated CUDA kernels inside the
    block, with their CPU tensors treated as CUDA tensors (no CPU-only value checks)."""
    with using(LIBRARY):
        yield


__all__ = ["Counts", "LIBRARY", "counting", "emulated", "ops", "set_thread_order"]
