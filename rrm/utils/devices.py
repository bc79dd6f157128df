"""The ``--device`` option: which torch device a name stands for."""

from __future__ import annotations

import torch

from rrm.utils.errors import InputError

DEVICE_CHOICES = "cpu, cuda, cuda:N or auto"


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The device ``name`` stands for: ``auto`` is CUDA when available, else the CPU;
    ``cuda`` without an index is GPU ``local_rank`` (this process's GPU under torchrun).
    Raises :class:`InputError` for an unknown name or CUDA without a GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}; use {DEVICE_CHOICES}") from None
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"unsupported device {name!r}; use {DEVICE_CHOICES}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device
