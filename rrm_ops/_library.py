"""Which op library the Python API calls: ``torch.ops.rrm_ops``, or, inside
``rrm_ops.emulation.emulated()``, the emulated CUDA kernels of ``torch.ops.rrm_ops_emu``."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

LIBRARY = "rrm_ops"
# Process-wide (a plain global, which torch.compile can follow, unlike a context variable).
_library = LIBRARY


def ops() -> torch._ops._OpNamespace:
    """The op namespace the Python API calls now."""
    return getattr(torch.ops, _library)


def runs_on_host(device: torch.device) -> bool:
    """Whether ops on ``device`` run on the host: CPU tensors, except for the emulated CUDA
    kernels, whose CPU tensors stand for CUDA tensors (the Python twin of csrc/common/device.h)."""
    return device.type == "cpu" and _library == LIBRARY


@contextmanager
def using(library: str) -> Iterator[None]:
    """Calls the ops of ``torch.ops.<library>`` inside the block."""
    global _library
    previous, _library = _library, library
    try:
        yield
    finally:
        _library = previous
