"""ResNet-38 ("model A" of Wu, Shen & van den Hengel's wide residual networks) in the dilated
form PSA uses, with PSA's module names so that PSA's ``res38_cls.pth``, RRM's
``RRM_final.pth`` and the converted ImageNet ``.params`` load without renaming.

Output stride 8 (three stride-2 stages, then dilation 2 and 4), 4096 output channels.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class _PreActivationBlock(nn.Module):
    """What PSA's two blocks share: ``bn_branch2a`` -> ReLU pre-activates the input, which
    feeds the branch and, when the shape changes, the shortcut ``conv_branch1`` (1x1,
    stride). Subclasses add the branch layers, then call :meth:`_add_shortcut`, so that the
    layers are created (and randomly initialised) in PSA's order."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.same_shape = in_channels == out_channels and stride == 1
        self.bn_branch2a = nn.BatchNorm2d(in_channels)

    def _add_shortcut(self, in_channels: int, out_channels: int, stride: int) -> None:
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def _preactivate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pre-activated input and the shortcut."""
        activated = F.relu(self.bn_branch2a(x))
        return activated, x if self.same_shape else self.conv_branch1(activated)


class ResBlock(_PreActivationBlock):
    """Pre-activation residual block with two 3x3 convolutions.

    Names follow PSA: ``bn_branch2a`` -> ReLU -> ``conv_branch2a`` (stride, ``first_dilation``)
    -> ``bn_branch2b1`` -> ReLU -> ``conv_branch2b1`` (``dilation``); the shortcut is the
    input, or ``conv_branch1`` (1x1, stride) applied to the pre-activated input when the
    shape changes.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        stride: int = 1,
        first_dilation: int | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__(in_channels, out_channels, stride)
        first_dilation = dilation if first_dilation is None else first_dilation
        self.conv_branch2a = nn.Conv2d(
            in_channels, mid_channels, 3, stride, padding=first_dilation, dilation=first_dilation, bias=False
        )
        self.bn_branch2b1 = nn.BatchNorm2d(mid_channels)
        self.conv_branch2b1 = nn.Conv2d(mid_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False)
        self._add_shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated, shortcut = self._preactivate(x)
        branch = self.conv_branch2a(activated)
        branch = self.conv_branch2b1(F.relu(self.bn_branch2b1(branch)))
        return shortcut + branch


class BottleneckBlock(_PreActivationBlock):
    """Pre-activation bottleneck block with dropout (PSA's ``ResBlock_bot``): 1x1 to
    ``out/4``, dilated 3x3 to ``out/2``, 1x1 to ``out``; the shortcut is ``conv_branch1``
    on the pre-activated input when the shape changes."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__(in_channels, out_channels, stride)
        self.conv_branch2a = nn.Conv2d(in_channels, out_channels // 4, 1, stride, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(out_channels // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(
            out_channels // 4, out_channels // 2, 3, padding=dilation, dilation=dilation, bias=False
        )
        self.bn_branch2b2 = nn.BatchNorm2d(out_channels // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(out_channels // 2, out_channels, 1, bias=False)
        self._add_shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated, shortcut = self._preactivate(x)
        branch = self.conv_branch2a(activated)
        branch = self.conv_branch2b1(self.dropout_2b1(F.relu(self.bn_branch2b1(branch))))
        branch = self.conv_branch2b2(self.dropout_2b2(F.relu(self.bn_branch2b2(branch))))
        return shortcut + branch


class ResNet38(nn.Sequential):
    """The ResNet-38 feature extractor: images ``[B, 3, H, W]`` (ImageNet-normalised) ->
    features ``[B, 4096, ceil(H/8), ceil(W/8)]`` (after ``bn7`` and ReLU).

    A plain sequence of PSA-named stages (``conv1a``, ``b2``, ``b2_1``, ..., ``b7``, ``bn7``,
    ``relu7``); ``relu7`` has no parameters, so the state dict keys are exactly PSA's.
    """

    out_channels = 4096
    output_stride = 8

    def __init__(self) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["conv1a"] = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        layers["b2"] = ResBlock(64, 128, 128, stride=2)
        layers["b2_1"] = ResBlock(128, 128, 128)
        layers["b2_2"] = ResBlock(128, 128, 128)
        layers["b3"] = ResBlock(128, 256, 256, stride=2)
        layers["b3_1"] = ResBlock(256, 256, 256)
        layers["b3_2"] = ResBlock(256, 256, 256)
        layers["b4"] = ResBlock(256, 512, 512, stride=2)
        for index in range(1, 6):
            layers[f"b4_{index}"] = ResBlock(512, 512, 512)
        layers["b5"] = ResBlock(512, 512, 1024, first_dilation=1, dilation=2)
        layers["b5_1"] = ResBlock(1024, 512, 1024, dilation=2)
        layers["b5_2"] = ResBlock(1024, 512, 1024, dilation=2)
        layers["b6"] = BottleneckBlock(1024, 2048, dilation=4, dropout=0.3)
        layers["b7"] = BottleneckBlock(2048, 4096, dilation=4, dropout=0.5)
        layers["bn7"] = nn.BatchNorm2d(4096)
        layers["relu7"] = nn.ReLU()
        super().__init__(layers)
