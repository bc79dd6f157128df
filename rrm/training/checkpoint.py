"""Training checkpoints (``last.pth``): the network, the optimiser, the step, the stage and
its accumulated state, the training time, the random state and the config; written
atomically and durably; read and checked by :func:`rrm.models.weights.load_checkpoint`."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rrm.models.weights import CHECKPOINT_FORMAT, check_state_dict_fits
from rrm.training.config import TrainConfig
from rrm.utils.errors import CheckpointError
from rrm.utils.files import remove_stale_temporaries, write_atomic


def save_checkpoint(path: str | os.PathLike, network: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    config: TrainConfig, device: torch.device, stage_state: dict[str, torch.Tensor],
                    elapsed_s: float) -> None:
    """Write the training state after ``step`` steps to ``path``, first removing the
    temporary files an interrupted earlier save left beside it."""
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "stage": config.stage,
        "model": network.state_dict(),
        "optimizer": optimizer.state_dict(),
        "stage_state": {name: value.detach().cpu() for name, value in stage_state.items()},
        "step": step,
        "elapsed_s": float(elapsed_s),
        "torch_rng": torch.get_rng_state(),
        "config": config.to_dict(),
    }
    if device.type == "cuda":
        payload["cuda_rng"] = torch.cuda.get_rng_state(device)
    remove_stale_temporaries(path)
    write_atomic(path, partial(torch.save, payload), durable=True)


def restore_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike, network: nn.Module,
                       optimizer: torch.optim.Optimizer, device: torch.device) -> int:
    """Load a checkpoint's (of :func:`rrm.models.weights.load_checkpoint` on ``path``) training state into
    ``network`` and ``optimizer``; returns its step. Raises :class:`CheckpointError` when
    its weights or optimiser state do not fit them."""
    check_state_dict_fits(network.state_dict(), checkpoint["model"],
                          f"checkpoint {Path(path)} does not fit the network of its config")
    network.load_state_dict(checkpoint["model"])
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
    except (KeyError, ValueError, TypeError) as error:
        raise CheckpointError(f"checkpoint {Path(path)} is damaged: its optimiser state does not fit ({error})") from None
    torch.set_rng_state(checkpoint["torch_rng"])
    if "cuda_rng" in checkpoint and device.type == "cuda":
        torch.cuda.set_rng_state(checkpoint["cuda_rng"], device)
    return int(checkpoint["step"])
