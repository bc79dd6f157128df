"""torchrun / DistributedDataParallel plumbing: one process per device, rank 0 writes."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from rrm.utils.devices import resolve_device


@dataclass(frozen=True)
class Context:
    """Where this process runs: its rank among ``world_size`` and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


# The process group's backend for each device type of the processes. On GPUs the group also
# has gloo for CPU tensors, so that a small flag can be reduced on the CPU without waiting for
# the GPU (nccl alone serves CUDA tensors only).
BACKENDS = {"cpu": "gloo", "cuda": "cpu:gloo,cuda:nccl"}


def served_device_types(backend: str) -> set[str]:
    """The device types whose tensors a process group of ``backend`` reduces (``"gloo"``,
    ``"nccl"`` or a ``"device:backend,..."`` list)."""
    if ":" in backend:
        return {part.split(":")[0].strip() for part in backend.split(",")}
    return {"nccl": {"cuda"}, "gloo": {"cpu", "cuda"}}.get(backend, set())


_collective_device = torch.device("cpu")  # this process's device, set by setup()


def setup(device_name: str) -> Context:
    """Join the process group when launched by torchrun (see :data:`BACKENDS`)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(device_name, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend=BACKENDS[device.type])
    global _collective_device
    _collective_device = device
    return Context(rank=rank, world_size=world_size, device=device)


def teardown() -> None:
    if _initialized():
        dist.destroy_process_group()


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over processes (a copy on ``tensor``'s device), or the tensor itself
    when not distributed. The reduction runs on this process's device, the same on every
    process whichever device each copy of ``tensor`` is on."""
    if not _initialized():
        return tensor
    reduced = tensor.to(_collective_device, copy=True)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced.to(tensor.device)


def any_process(flag: bool) -> bool:
    """Whether ``flag`` is set in any process (every process must call it). Reduced on the
    CPU, which the process group serves on every device (:data:`BACKENDS`), so that a check
    made at every step neither copies to the GPU nor waits for it."""
    if not _initialized():
        return flag
    count = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(count, op=dist.ReduceOp.SUM)
    return bool(count.item() > 0)


def barrier() -> None:
    if _initialized():
        dist.barrier()


def parameters_in_sync(module: torch.nn.Module) -> bool:
    """Whether every process holds bit-identical parameters (True when not distributed)."""
    if not _initialized():
        return True
    local = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
    reference = local.clone()
    dist.broadcast(reference, src=0)
    mismatch = torch.tensor([0.0 if torch.equal(local, reference) else 1.0], device=local.device)
    return bool(all_reduce_sum(mismatch).item() == 0)
