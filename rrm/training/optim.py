"""The optimiser and RRM's poly learning-rate schedule over the four parameter groups."""

from __future__ import annotations

import torch
from torch import nn

from rrm.training.config import TrainConfig


def build_optimizer(network: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum over the network's four ``param_groups`` (RRM's recipe: lr x1/x2/
    x10/x20 for backbone/head weights/biases), or Adam with one lr for all groups. Each
    group keeps its starting lr as ``initial_lr`` for :func:`poly_learning_rate`."""
    groups = network.param_groups(config.lr, config.weight_decay)
    for group in groups:
        group["initial_lr"] = group["lr"] if config.optimizer == "sgd" else config.lr
        group["lr"] = group["initial_lr"]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    return torch.optim.Adam(groups, lr=config.lr)


def poly_learning_rate(optimizer: torch.optim.Optimizer, step: int, max_steps: int, power: float) -> None:
    """RRM's poly schedule: each group's lr = its initial lr x (1 - step / max_steps)^power."""
    factor = (1 - step / max_steps) ** power
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor
