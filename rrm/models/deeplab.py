"""DeepLab-v2 for RRM's second step (training a fully supervised network on RRM's pseudo
masks): a dilated ResNet-101 (output stride 8) and an ASPP classifier that sums four 3x3
convolutions of rates 6, 12, 18 and 24; plus a small variant for CPU runs.

The ResNet-101 uses torchvision's module names (``conv1``, ``bn1``, ``layer1``..``layer4``,
``downsample``), so an ImageNet ResNet-101 state dict in torchvision's layout loads into
``model.backbone`` (without its ``fc``).
"""

from __future__ import annotations

import torch
from torch import nn

from rrm.models.common import build_param_groups, freeze_batchnorm


class Bottleneck(nn.Module):
    """ResNet bottleneck (1x1, 3x3 with stride and dilation, 1x1 to ``4 * width``)."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + shortcut)


class ResNet101(nn.Module):
    """Dilated ResNet-101: images ``[B, 3, H, W]`` -> features ``[B, 2048, h, w]`` at
    output stride 8 (``layer3`` dilation 2 and ``layer4`` dilation 4 instead of strides,
    as in DeepLab-v2)."""

    out_channels = 2048
    output_stride = 8

    def __init__(self, blocks: tuple[int, int, int, int] = (3, 4, 23, 3)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        self.in_channels = 64
        self.layer1 = self._make_layer(64, blocks[0], stride=1, dilation=1)
        self.layer2 = self._make_layer(128, blocks[1], stride=2, dilation=1)
        self.layer3 = self._make_layer(256, blocks[2], stride=1, dilation=2)
        self.layer4 = self._make_layer(512, blocks[3], stride=1, dilation=4)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, width: int, count: int, stride: int, dilation: int) -> nn.Sequential:
        layers = []
        for index in range(count):
            layers.append(Bottleneck(self.in_channels, width, stride if index == 0 else 1, dilation))
            self.in_channels = width * Bottleneck.expansion
        return nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class DeepLabV2(nn.Module):
    """DeepLab-v2: backbone features -> ASPP (sum of four dilated 3x3 convolutions to
    ``num_classes + 1`` channels, bias, initialised N(0, 0.01) as in DeepLab-v2).

    Args:
        backbone: maps images ``[B, 3, H, W]`` to ``[B, backbone.out_channels, h, w]``.
        num_classes: foreground classes C (the output has C + 1 channels, 0 = background).
        rates: the ASPP dilation rates.
        freeze_bn: keep BatchNorm frozen (DeepLab-v2 does, for a pretrained backbone).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int = 20,
        rates: tuple[int, ...] = (6, 12, 18, 24),
        freeze_bn: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.output_stride = backbone.output_stride
        self.freeze_bn = freeze_bn
        self.classifier = nn.ModuleList(
            nn.Conv2d(backbone.out_channels, num_classes + 1, 3, padding=rate, dilation=rate) for rate in rates
        )
        for conv in self.classifier:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        if freeze_bn:
            freeze_batchnorm(self)

    def train(self, mode: bool = True) -> DeepLabV2:
        super().train(mode)
        if self.freeze_bn:
            freeze_batchnorm(self)
        return self

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """ImageNet-normalised images ``[B, 3, H, W]`` -> ``{"seg_logits": [B, C + 1, h, w]}``
        at the backbone's output stride."""
        features = self.backbone(images)
        logits = self.classifier[0](features)
        for conv in self.classifier[1:]:
            logits = logits + conv(features)
        return {"seg_logits": logits}

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """Backbone weights 1x / biases 2x, ASPP weights 10x / biases 20x (DeepLab-v2's
        multipliers); see :func:`rrm.models.common.build_param_groups`."""
        return build_param_groups([self.backbone], [self.classifier], lr, weight_decay)

