"""Weight files: reading them safely, finding the state dict inside and checking that it
fits a network.

A weights file is read with ``torch.load(weights_only=True)`` onto the CPU. It is an rrm
training checkpoint (a dict whose ``format`` is :data:`CHECKPOINT_FORMAT`, with the network
under ``model``; written by :mod:`rrm.training.checkpoint`) or a plain state dict, possibly
held under ``state_dict`` or ``model`` and with the ``module.`` prefix of
(Distributed)DataParallel (RRM's ``RRM_final.pth``, PSA's ``res38_cls.pth``, torchvision's
ImageNet weights).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from rrm.utils.errors import CheckpointError

CHECKPOINT_FORMAT = "rrm-train-v1"
SHOWN_KEYS = 3  # keys named per kind of problem in a state-dict error
# Entries every training checkpoint holds, with their type.
_CHECKPOINT_ENTRIES = {"model": dict, "optimizer": dict, "step": int, "config": dict, "torch_rng": torch.Tensor}
# The stage whose checkpoints hold each network (identified by rrm.evaluation.model_loading).
STAGE_OF_NETWORK = {"rrm": "rrm", "deeplab": "fcn"}


def read_torch_file(path: str | os.PathLike) -> object:
    """The content of a torch file. Raises ``FileNotFoundError`` if there is none and
    :class:`CheckpointError` if it cannot be loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types (UnpicklingError, RuntimeError, EOFError, ...)
        message = (str(error).strip().splitlines() or [""])[0]
        reason = f"{type(error).__name__}: {message}" if message else type(error).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: not a loadable PyTorch file ({reason})") from None


def is_training_checkpoint(content: object) -> bool:
    """Whether ``content`` (of :func:`read_torch_file`) is an rrm training checkpoint."""
    return isinstance(content, dict) and content.get("format") == CHECKPOINT_FORMAT


def state_dict_of(content: object, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in ``content`` (of :func:`read_torch_file` on ``path``): ``content``
    itself or its ``state_dict`` or ``model`` entry, without the ``module.`` prefix.
    Raises :class:`CheckpointError` naming ``path`` if there is no non-empty dict of tensors."""
    if isinstance(content, dict):
        for key in ("state_dict", "model"):
            if isinstance(content.get(key), dict):
                content = content[key]
                break
    if not isinstance(content, dict) or not content or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict of tensors")
    if all(key.startswith("module.") for key in content):
        content = {key[len("module."):]: value for key, value in content.items()}
    return dict(content)


def checkpoint_stage(checkpoint: dict[str, Any]) -> str:
    """The stage a checkpoint was trained in (older checkpoints: their config's)."""
    return str(checkpoint.get("stage") or checkpoint["config"].get("stage", "rrm"))


def load_checkpoint(path: str | os.PathLike, stage: str | None = None) -> dict[str, Any]:
    """Read and check a training checkpoint written by :func:`rrm.training.checkpoint.save_checkpoint`: its format,
    its entries and their types, its stage (when ``stage`` is given) and that every tensor
    is finite. Raises ``FileNotFoundError``, or :class:`CheckpointError` with one line naming
    the file and what is wrong. The shapes are checked against the network by
    :func:`rrm.training.checkpoint.restore_checkpoint` and :func:`check_state_dict_fits`."""
    payload = read_torch_file(path)
    check_training_checkpoint(payload, path, stage)
    return payload


def check_training_checkpoint(payload: object, path: str | os.PathLike, stage: str | None = None) -> None:
    """The checks of :func:`load_checkpoint` on the content ``payload`` of ``path``."""
    if not is_training_checkpoint(payload):
        raise CheckpointError(f"checkpoint {path} is not an rrm training checkpoint "
                              f"(expected format {CHECKPOINT_FORMAT!r})")
    for key, kind in _CHECKPOINT_ENTRIES.items():
        if not isinstance(payload.get(key), kind):
            found = "missing" if key not in payload else f"a {type(payload[key]).__name__}"
            raise CheckpointError(f"checkpoint {path} is damaged: entry {key!r} is {found}, expected a {kind.__name__}")
    found_stage = checkpoint_stage(payload)
    if stage is not None and found_stage != stage:
        raise CheckpointError(f"checkpoint {path} is of stage {found_stage!r}, expected stage {stage!r}")
    check_finite(payload, path)


def check_finite(content: object, path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` naming the first tensor or number of ``content`` (read
    from ``path``) that is NaN or infinite."""
    bad = _first_non_finite(content, "")
    if bad:
        raise CheckpointError(f"checkpoint {path} is damaged: {bad} holds NaN or infinite values")


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


def read_weights(path: str | os.PathLike, stage: str | None = None) -> tuple[dict[str, Any] | None,
                                                                            dict[str, torch.Tensor]]:
    """The training checkpoint in a weights file (None for a plain state dict) and its state
    dict, on the CPU. Every weights file is read through here: a training checkpoint is
    checked by :func:`check_training_checkpoint` (of ``stage`` when given), a plain state
    dict for finiteness."""
    content = read_torch_file(path)
    if is_training_checkpoint(content):
        check_training_checkpoint(content, path, stage)
        return content, state_dict_of(content["model"], path)
    state = state_dict_of(content, path)
    check_finite(state, path)
    return None, state


def load_state_dict_file(path: str | os.PathLike, stage: str | None = None) -> dict[str, torch.Tensor]:
    """The state dict of a weights file (see the module docstring and :func:`read_weights`)."""
    return read_weights(path, stage)[1]


def check_state_dict_fits(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], context: str,
                          may_be_missing: Callable[[str], bool] | None = None) -> None:
    """Raise :class:`CheckpointError` ``"<context>: N missing keys (e.g. ...); N unexpected
    keys (...); N shape mismatches (e.g. key: found shape vs expected)"`` unless ``found`` has every key of ``expected``
    (except those ``may_be_missing`` accepts), no other key and the same shapes. One line,
    unlike torch's own message, which lists every key."""
    missing = [key for key in expected if key not in found and not (may_be_missing and may_be_missing(key))]
    unexpected = [key for key in found if key not in expected]
    mismatched = [
        f"{key}: {tuple(found[key].shape)} vs {tuple(value.shape)}"
        for key, value in expected.items()
        if key in found and found[key].shape != value.shape
    ]
    kinds = (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
    problems = [f"{len(keys)} {label} (e.g. {', '.join(keys[:SHOWN_KEYS])})" for label, keys in kinds if keys]
    if problems:
        raise CheckpointError(f"{context}: {'; '.join(problems)}")
