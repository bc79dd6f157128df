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

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from rrm.utils.errors import CheckpointError

CHECKPOINT_FORMAT = "rrm-train-v1"
SHOWN_KEYS = 3  # keys named per kind of problem in a state-dict error


def read_torch_file(path: str | os.PathLike) -> object:
    """The content of a torch file. Raises ``FileNotFoundError`` if there is none and
    :class:`CheckpointError` if it cannot be loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types (UnpicklingError, RuntimeError, EOFError, ...)
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
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


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of a weights file (see the module docstring), on the CPU."""
    return state_dict_of(read_torch_file(path), path)


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
