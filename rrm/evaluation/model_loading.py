"""Load a segmentation network for inference from a weights file.

The file is an rrm training checkpoint (``last.pth``; the backbone comes from its config) or
a plain state dict (RRM's published ``RRM_final.pth`` and the like; see
:mod:`rrm.models.weights`). The network (RRM or step-2 DeepLab), the backbone and the number
of classes are read from the weights' keys and shapes when not given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rrm.models import build_deeplab, build_rrm
from rrm.models.weights import STAGE_OF_NETWORK, check_state_dict_fits, read_weights
from rrm.utils.errors import CheckpointError

# Keys that identify the network (by its output layer) and its backbone (by its first layer).
_SEG_OUTPUT_KEYS = {"rrm": "fc8_seg_conv2.weight", "deeplab": "classifier.0.weight"}
_BACKBONE_KEYS = {
    "rrm": {"resnet38": "conv1a.weight", "small": "stage1.0.weight"},
    "deeplab": {"resnet101": "backbone.conv1.weight", "small": "backbone.stage1.0.weight"},
}


@dataclass
class SegmentationModel:
    """A network ready for inference: ``network(images)["seg_logits"]`` is
    ``[B, num_classes + 1, h, w]`` (channel 0 background) for ImageNet-normalised images."""

    network: nn.Module
    kind: str  # "rrm" or "deeplab"
    backbone: str
    num_classes: int
    description: str  # where the weights came from, for the log


def load_segmentation_model(path: str | os.PathLike, backbone: str | None = None,
                            stage: str | None = None) -> SegmentationModel:
    """Load an RRM or DeepLab network from a weights file (see the module docstring), on
    the CPU in eval mode. ``backbone`` overrides the file's; ``stage`` (``"rrm"`` or
    ``"fcn"``), when given, is the stage whose network the file must hold. Raises
    ``FileNotFoundError`` or :class:`CheckpointError` (an unknown backbone:
    :class:`~rrm.utils.errors.InputError`) with a one-line reason."""
    path = Path(path)
    content, state = read_weights(path, stage)
    training = content is not None
    kind = _network_kind(state, path)
    if stage is not None and STAGE_OF_NETWORK[kind] != stage:
        raise CheckpointError(f"checkpoint {path} is of stage {STAGE_OF_NETWORK[kind]!r}, expected stage {stage!r}")
    saved_backbone = content["config"].get("backbone") if training else None
    backbone = backbone or saved_backbone or _guess_backbone(state, kind, path)
    num_classes = int(state[_SEG_OUTPUT_KEYS[kind]].shape[0]) - 1
    network = (build_rrm if kind == "rrm" else build_deeplab)(backbone, num_classes)
    check_state_dict_fits(network.state_dict(), state,
                          f"checkpoint {path} does not fit {kind} with backbone {backbone!r}")
    network.load_state_dict(state)
    network.eval()
    source = f"rrm training checkpoint (step {content.get('step', '?')})" if training else "state dict"
    description = f"{path}: {source}, {kind}/{backbone}, {num_classes} classes"
    return SegmentationModel(network, kind, backbone, num_classes, description)


def _network_kind(state: dict[str, torch.Tensor], path: Path) -> str:
    for kind, key in _SEG_OUTPUT_KEYS.items():
        if key in state:
            return kind
    if "fc8.weight" in state:
        raise CheckpointError(
            f"checkpoint {path} has no segmentation branch (fc8_seg_conv*): it is a classification network "
            "such as PSA's res38_cls.pth; inference needs RRM or DeepLab weights"
        )
    raise CheckpointError(f"checkpoint {path} holds neither RRM nor DeepLab weights (first keys: {list(state)[:3]})")


def _guess_backbone(state: dict[str, torch.Tensor], kind: str, path: Path) -> str:
    for backbone, key in _BACKBONE_KEYS[kind].items():
        if key in state:
            return backbone
    raise CheckpointError(f"cannot tell the backbone of checkpoint {path} from its keys; pass --backbone")
