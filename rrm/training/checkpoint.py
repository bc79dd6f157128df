"""Training checkpoints (``last.pth``): the network, the optimiser, the step, the stage and
its accumulated state, the training time, the random state and the config; written
atomically and durably, read with ``weights_only=True`` and checked before use."""

from __future__ import annotations

import math
import os
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rrm.models.weights import CHECKPOINT_FORMAT, check_state_dict_fits, is_training_checkpoint, read_torch_file
from rrm.training.config import TrainConfig
from rrm.utils.errors import CheckpointError
from rrm.utils.files import remove_stale_temporaries, write_atomic

# Entries every checkpoint holds, with their type.
_REQUIRED = {"model": dict, "optimizer": dict, "step": int, "config": dict, "torch_rng": torch.Tensor}


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


def checkpoint_stage(checkpoint: dict[str, Any]) -> str:
    """The stage a checkpoint was trained in (older checkpoints: their config's)."""
    return str(checkpoint.get("stage") or checkpoint["config"].get("stage", "rrm"))


def load_checkpoint(path: str | os.PathLike, stage: str | None = None) -> dict[str, Any]:
    """Read and check a training checkpoint written by :func:`save_checkpoint`: its format,
    its entries and their types, its stage (when ``stage`` is given) and that every tensor
    is finite. Raises ``FileNotFoundError``, or :class:`CheckpointError` with one line naming
    the file and what is wrong. The shapes are checked by :func:`restore_checkpoint`."""
    payload = read_torch_file(path)
    if not is_training_checkpoint(payload):
        raise CheckpointError(f"checkpoint {path} is not an rrm training checkpoint "
                              f"(expected format {CHECKPOINT_FORMAT!r})")
    for key, kind in _REQUIRED.items():
        if not isinstance(payload.get(key), kind):
            found = "missing" if key not in payload else f"a {type(payload[key]).__name__}"
            raise CheckpointError(f"checkpoint {path} is damaged: entry {key!r} is {found}, expected a {kind.__name__}")
    found_stage = checkpoint_stage(payload)
    if stage is not None and found_stage != stage:
        raise CheckpointError(f"checkpoint {path} is of stage {found_stage!r}, expected stage {stage!r}")
    bad = _first_non_finite(payload, "")
    if bad:
        raise CheckpointError(f"checkpoint {path} is damaged: {bad} holds NaN or infinite values")
    return payload


def _first_non_finite(value: Any, name: str) -> str | None:
    """The name of the first floating tensor or float in ``value`` that is not finite."""
    if isinstance(value, torch.Tensor):
        return name if value.is_floating_point() and not bool(torch.isfinite(value).all()) else None
    if isinstance(value, float):
        return name if not math.isfinite(value) else None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _first_non_finite(item, f"{name}.{key}" if name else str(key))
        if found:
            return found
    return None


def restore_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike, network: nn.Module,
                       optimizer: torch.optim.Optimizer, device: torch.device) -> int:
    """Load a checkpoint's (of :func:`load_checkpoint` on ``path``) training state into
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
