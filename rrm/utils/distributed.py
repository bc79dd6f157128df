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


def setup(device_name: str) -> Context:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on GPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(device_name, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Context(rank=rank, world_size=world_size, device=device)


def teardown() -> None:
    if _initialized():
        dist.destroy_process_group()


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over processes: a copy (on the GPU under NCCL, which reduces only
    GPU tensors), or the tensor itself when not distributed."""
    if _initialized():
        tensor = tensor.clone()
        if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
            tensor = tensor.cuda()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


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
