"""Training checkpoints (``last.pth``): the network, the optimiser, the step, the random
state and the config; written atomically and durably, read with ``weights_only=True``."""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import torch
from torch import nn

from rrm.models.weights import CHECKPOINT_FORMAT, is_training_checkpoint, read_torch_file
from rrm.training.config import TrainConfig
from rrm.utils.errors import CheckpointError
from rrm.utils.files import write_atomic


def save_checkpoint(path: str | os.PathLike, network: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    config: TrainConfig, device: torch.device) -> None:
    """Write the training state after ``step`` steps to ``path``."""
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "model": network.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "torch_rng": torch.get_rng_state(),
        "config": config.to_dict(),
    }
    if device.type == "cuda":
        payload["cuda_rng"] = torch.cuda.get_rng_state(device)
    write_atomic(path, partial(torch.save, payload), durable=True)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint written by :func:`save_checkpoint`. Raises
    ``FileNotFoundError`` or :class:`CheckpointError` for a missing, unreadable or other file."""
    payload = read_torch_file(path)
    if not is_training_checkpoint(payload):
        raise CheckpointError(f"{path} is not an rrm training checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    return payload


def restore_checkpoint(checkpoint: dict[str, Any], network: nn.Module, optimizer: torch.optim.Optimizer,
                       device: torch.device) -> int:
    """Load a checkpoint's training state; returns its step."""
    network.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    torch.set_rng_state(checkpoint["torch_rng"])
    if "cuda_rng" in checkpoint and device.type == "cuda":
        torch.cuda.set_rng_state(checkpoint["cuda_rng"], device)
    return int(checkpoint["step"])
