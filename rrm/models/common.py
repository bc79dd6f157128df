"""Pieces shared by the networks: frozen BatchNorm and the four poly-LR parameter groups."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from torch import nn

# (name, lr multiplier, weight decay applies) of RRM's/PSA's/DeepLab's four groups.
PARAM_GROUP_SPECS: tuple[tuple[str, float, bool], ...] = (
    ("backbone_weights", 1.0, True),
    ("backbone_biases", 2.0, False),
    ("head_weights", 10.0, True),
    ("head_biases", 20.0, False),
)


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm layer of ``module`` in eval mode and stop its affine parameters'
    gradients, as PSA does: with batches of a few images the statistics of pretrained
    networks are better kept than re-estimated."""
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.eval()
            for parameter in layer.parameters(recurse=False):
                parameter.requires_grad_(False)


@contextmanager
def running_stats_kept(module: nn.Module) -> Iterator[None]:
    """Within the block, BatchNorm layers of ``module`` in train mode still normalise with the
    batch's statistics but leave their running statistics (and batch count) untouched.

    For extra forward passes that are not training batches, such as RRM's CAMs at other
    scales: their statistics differ from those of the training crops, and running averages
    that mix them normalise every evaluation-mode pass wrongly.
    """
    layers = [
        layer
        for layer in module.modules()
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.training and layer.track_running_stats
    ]
    for layer in layers:
        layer.track_running_stats = False
    try:
        yield
    finally:
        for layer in layers:
            layer.track_running_stats = True


def build_param_groups(
    backbone: Iterable[nn.Module], heads: Iterable[nn.Module], lr: float, weight_decay: float
) -> list[dict]:
    """The four parameter groups of the poly schedule, as dicts for ``torch.optim``.

    Weights are the ``weight`` of convolutions and linear layers; every other trainable
    parameter (biases, trainable BatchNorm affine parameters) counts as a bias. Each dict
    has ``name``, ``params``, ``lr`` (= ``lr * lr_mult``), ``lr_mult`` and
    ``weight_decay`` (0 for biases). Groups are kept even when empty, so their order is
    fixed: backbone weights 1x, backbone biases 2x, head weights 10x, head biases 20x.
    Parameters with ``requires_grad=False`` (e.g. frozen BatchNorm) are left out.
    """
    buckets: list[list[nn.Parameter]] = [[], [], [], []]
    for offset, modules in ((0, backbone), (2, heads)):
        for module in modules:
            for layer in module.modules():
                for name, parameter in layer.named_parameters(recurse=False):
                    if not parameter.requires_grad:
                        continue
                    is_weight = name == "weight" and isinstance(layer, (nn.Conv2d, nn.Linear))
                    buckets[offset + (0 if is_weight else 1)].append(parameter)
    return [
        {
            "name": name,
            "params": params,
            "lr": lr * lr_mult,
            "lr_mult": lr_mult,
            "weight_decay": weight_decay if decays else 0.0,
        }
        for (name, lr_mult, decays), params in zip(PARAM_GROUP_SPECS, buckets)
    ]
