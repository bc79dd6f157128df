"""A small convolutional backbone for CPU runs (trainable from scratch on the synthetic
dataset in minutes): four conv-BN-ReLU stages, output stride 8."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class SmallBackbone(nn.Sequential):
    """Images ``[B, 3, H, W]`` -> features ``[B, widths[-1], ceil(H/8), ceil(W/8)]``.

    Stages ``stage1``..``stage4``, two 3x3 conv-BN-ReLU layers each; the first three start
    with stride 2, the last uses dilation 2 to widen the context at output stride 8.
    """

    output_stride = 8

    def __init__(self, widths: tuple[int, int, int, int] = (16, 32, 64, 128)) -> None:
        stages: OrderedDict[str, nn.Module] = OrderedDict()
        in_channels = 3
        for index, width in enumerate(widths):
            downsample = index < 3
            layers = _conv_bn_relu(in_channels, width, stride=2 if downsample else 1, dilation=1 if downsample else 2)
            layers += _conv_bn_relu(width, width, dilation=1 if downsample else 2)
            stages[f"stage{index + 1}"] = nn.Sequential(*layers)
            in_channels = width
        super().__init__(stages)
        self.out_channels = widths[-1]
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
