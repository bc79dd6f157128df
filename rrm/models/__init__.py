"""Networks: ResNet-38 (PSA names), a small CPU backbone, the RRM network, DeepLab-v2, and
weight files (loading, checking, MXNet conversion).

Every network takes ImageNet-normalised images ``[B, 3, H, W]``, works at output stride 8,
returns a dict of tensors from ``forward`` (``seg_logits`` ``[B, C + 1, h, w]`` whenever it
has a segmentation head) and has ``param_groups(lr, weight_decay)`` giving the four
poly-LR groups.
"""

from __future__ import annotations

from rrm.models.common import PARAM_GROUP_SPECS, build_param_groups, freeze_batchnorm
from rrm.models.deeplab import DeepLabV2, ResNet101
from rrm.models.resnet38 import ResNet38
from rrm.models.rrm_net import RRMNet
from rrm.models.small import SmallBackbone
from rrm.models.weights import CHECKPOINT_FORMAT, check_state_dict_fits, load_state_dict_file
from rrm.utils.errors import InputError

RRM_BACKBONES = ("resnet38", "small")
DEEPLAB_BACKBONES = ("resnet101", "small")

# Head sizes for the small backbone: its feature map is ~16x16 for the synthetic crops, so
# RRM's rate-12 head (tuned to 41x41 ResNet-38 maps) is scaled down with it.
SMALL_SEG_HIDDEN_CHANNELS = 128
SMALL_SEG_DILATION = 3
SMALL_ASPP_RATES = (2, 4, 6, 8)


def build_rrm(backbone: str = "resnet38", num_classes: int = 20, *, seg_head: bool = True) -> RRMNet:
    """Build the RRM network.

    ``"resnet38"``: PSA's ResNet-38 with RRM's heads (512-channel, rate-12 segmentation
    branch), BatchNorm frozen; its ``state_dict()`` keys and shapes equal those of RRM's
    ``RRM_final.pth`` (with ``seg_head=False``: PSA's ``res38_cls.pth``).
    ``"small"``: :class:`SmallBackbone` (128 channels) with a 128-channel, rate-3
    segmentation branch and trainable BatchNorm, for CPU runs from scratch.
    """
    if backbone == "resnet38":
        return RRMNet(ResNet38(), ResNet38.out_channels, num_classes, seg_head=seg_head, freeze_bn=True)
    if backbone == "small":
        features = SmallBackbone()
        return RRMNet(
            features,
            features.out_channels,
            num_classes,
            seg_head=seg_head,
            seg_hidden_channels=SMALL_SEG_HIDDEN_CHANNELS,
            seg_dilation=SMALL_SEG_DILATION,
            freeze_bn=False,
        )
    raise InputError(f"unknown RRM backbone {backbone!r}; choose from {RRM_BACKBONES}")


def build_deeplab(backbone: str = "resnet101", num_classes: int = 20) -> DeepLabV2:
    """Build DeepLab-v2 for step 2: ``"resnet101"`` (ASPP rates 6, 12, 18, 24, BatchNorm
    frozen) or ``"small"`` (:class:`SmallBackbone`, rates 2, 4, 6, 8, trainable BatchNorm).
    Outputs ``num_classes + 1`` channels."""
    if backbone == "resnet101":
        return DeepLabV2(ResNet101(), num_classes, freeze_bn=True)
    if backbone == "small":
        return DeepLabV2(SmallBackbone(), num_classes, rates=SMALL_ASPP_RATES, freeze_bn=False)
    raise InputError(f"unknown DeepLab backbone {backbone!r}; choose from {DEEPLAB_BACKBONES}")


__all__ = [
    "CHECKPOINT_FORMAT", "DEEPLAB_BACKBONES", "PARAM_GROUP_SPECS", "RRM_BACKBONES",
    "DeepLabV2", "RRMNet", "ResNet101", "ResNet38", "SmallBackbone",
    "build_deeplab", "build_param_groups", "build_rrm", "check_state_dict_fits", "freeze_batchnorm",
    "load_state_dict_file",
]
