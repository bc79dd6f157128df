"""The RRM network: a shared backbone with a classification branch (whose weights give the
CAMs) and a parallel segmentation branch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rrm.models.common import build_param_groups, freeze_batchnorm, running_stats_kept
from rrm.models.weights import check_state_dict_fits

HEAD_MODULES = ("fc8", "fc8_seg_conv1", "fc8_seg_conv2")


class RRMNet(nn.Module):
    """RRM's network around any sequential backbone of output stride 8.

    The backbone's stages are registered directly on this module under their own names
    (not under a ``backbone.`` prefix), so with ResNet-38 the state dict keys are exactly
    those of RRM's ``RRM_final.pth`` (``conv1a`` ... ``bn7``, ``fc8``, ``fc8_seg_conv1``,
    ``fc8_seg_conv2``), and without the segmentation head exactly those of PSA's
    ``res38_cls.pth``.

    Heads (names as in RRM):

    - classification: dropout -> global average pooling -> ``fc8`` (1x1 conv to
      ``num_classes``, no bias);
    - CAMs: ``ReLU(conv(features, fc8.weight))``;
    - segmentation: ``fc8_seg_conv1`` (3x3, dilation ``seg_dilation``, to
      ``seg_hidden_channels``, bias) -> ReLU -> ``fc8_seg_conv2`` (3x3, same dilation, to
      ``num_classes + 1``, bias; channel 0 is background).

    Args:
        backbone: an ``nn.Sequential`` mapping images ``[B, 3, H, W]`` to features
            ``[B, feature_channels, h, w]``.
        feature_channels: channels of the backbone output.
        num_classes: foreground classes C.
        seg_head: build the segmentation branch (False gives PSA's classification network).
        seg_hidden_channels, seg_dilation: the segmentation branch's width and dilation
            (RRM: 512 and 12 for ResNet-38 features of a 321-pixel crop).
        classifier_dropout: dropout (``Dropout2d``) before pooling, RRM: 0.5.
        freeze_bn: keep every BatchNorm in eval mode with frozen affine parameters, also in
            ``train()`` (PSA/RRM do this for the pretrained ResNet-38).
    """

    def __init__(
        self,
        backbone: nn.Sequential,
        feature_channels: int,
        num_classes: int = 20,
        *,
        seg_head: bool = True,
        seg_hidden_channels: int = 512,
        seg_dilation: int = 12,
        classifier_dropout: float = 0.5,
        freeze_bn: bool = True,
    ) -> None:
        super().__init__()
        self.backbone_names: tuple[str, ...] = tuple(name for name, _ in backbone.named_children())
        for name, stage in backbone.named_children():
            if name in HEAD_MODULES or name == "dropout7":
                raise ValueError(f"backbone stage name {name!r} collides with a head module")
            self.add_module(name, stage)
        self.num_classes = num_classes
        self.output_stride = getattr(backbone, "output_stride", 8)
        self.freeze_bn = freeze_bn

        self.dropout7 = nn.Dropout2d(classifier_dropout)
        self.fc8 = nn.Conv2d(feature_channels, num_classes, 1, bias=False)
        nn.init.xavier_uniform_(self.fc8.weight)
        self.has_seg_head = seg_head
        if seg_head:
            self.fc8_seg_conv1 = nn.Conv2d(
                feature_channels, seg_hidden_channels, 3, padding=seg_dilation, dilation=seg_dilation
            )
            self.fc8_seg_conv2 = nn.Conv2d(
                seg_hidden_channels, num_classes + 1, 3, padding=seg_dilation, dilation=seg_dilation
            )
            for conv in (self.fc8_seg_conv1, self.fc8_seg_conv2):
                nn.init.xavier_uniform_(conv.weight)
                nn.init.zeros_(conv.bias)
        if freeze_bn:
            freeze_batchnorm(self)

    # --- structure -------------------------------------------------------------------

    def backbone_modules(self) -> list[nn.Module]:
        """The backbone stages, in order."""
        return [getattr(self, name) for name in self.backbone_names]

    def head_modules(self) -> list[nn.Module]:
        """The layers RRM trains from scratch (``fc8`` and the segmentation branch)."""
        return [getattr(self, name) for name in HEAD_MODULES if hasattr(self, name)]

    def train(self, mode: bool = True) -> RRMNet:
        super().train(mode)
        if self.freeze_bn:
            freeze_batchnorm(self)
        return self

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """The four poly-schedule groups: backbone weights (``lr``, weight decay), backbone
        biases (``2 lr``, no decay), head weights (``10 lr``, weight decay), head biases
        (``20 lr``, no decay); see :func:`rrm.models.common.build_param_groups`."""
        return build_param_groups(self.backbone_modules(), self.head_modules(), lr, weight_decay)

    # --- forward ---------------------------------------------------------------------

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features ``[B, F, h, w]`` of images ``[B, 3, H, W]``."""
        x = images
        for name in self.backbone_names:
            x = self._modules[name](x)
        return x

    def cams_from_features(self, features: torch.Tensor) -> torch.Tensor:
        """CAMs ``ReLU(fc8 applied per pixel)``: ``[B, C, h, w]``, float, >= 0."""
        return F.relu(F.conv2d(features, self.fc8.weight))

    def forward(self, images: torch.Tensor, cam_scales: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
        """Run both branches on ImageNet-normalised images ``[B, 3, H, W]``.

        Returns a dict of tensors at feature resolution ``h, w = ceil(H/8), ceil(W/8)``:

        - ``cls_logits`` ``[B, C]`` (for the multilabel soft-margin loss);
        - ``cams`` ``[B, C, h, w]``: single-scale CAMs, or with ``cam_scales`` (which must
          contain 1) the average of the CAMs over those scales, as RRM does: the images are
          resized (bilinear) to ``(int(H * s), int(W * s))`` for each scale ``s``, the CAMs of
          every scale other than 1 are computed without gradient and resized bilinearly to
          the scale-1 size (scale 1 reuses this pass). In train mode those extra passes
          leave the BatchNorm running statistics as they are
          (:func:`rrm.models.common.running_stats_kept`), so evaluation normalises with the
          statistics of the training crops alone;
        - ``seg_logits`` ``[B, C + 1, h, w]`` (only with the segmentation head).
        """
        features = self.features(images)
        pooled = F.adaptive_avg_pool2d(self.dropout7(features), 1)
        cams = self.cams_from_features(features)
        outputs = {"cls_logits": self.fc8(pooled).flatten(1)}
        outputs["cams"] = cams if cam_scales is None else self._average_cams(images, cams, cam_scales)
        if self.has_seg_head:
            outputs["seg_logits"] = self.fc8_seg_conv2(F.relu(self.fc8_seg_conv1(features)))
        return outputs

    def _average_cams(self, images: torch.Tensor, main_cams: torch.Tensor, scales: Sequence[float]) -> torch.Tensor:
        if 1.0 not in scales:
            raise ValueError(f"cam scales must include 1 (it sets the output size), got {tuple(scales)}")
        height, width = images.shape[-2:]
        total = torch.zeros_like(main_cams)
        for scale in scales:
            if scale == 1.0:
                total = total + main_cams
                continue
            with torch.no_grad(), running_stats_kept(self):
                size = (max(1, int(height * scale)), max(1, int(width * scale)))
                resized = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
                cams = self.cams_from_features(self.features(resized))
                cams = F.interpolate(cams, size=main_cams.shape[-2:], mode="bilinear", align_corners=False)
            total = total + cams  # outside no_grad, so scale 1's graph is kept
        return total / len(scales)

    # --- weights ---------------------------------------------------------------------

    def load_pretrained(self, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
        """Load backbone weights, and head weights where present.

        For initialising from PSA's ``res38_cls.pth`` (backbone + ``fc8``) or a converted
        ImageNet ``.params`` (backbone only). Unlike ``load_state_dict(strict=False)`` it
        fails (:class:`~rrm.utils.errors.CheckpointError`) on anything unexpected: a key this
        network does not have, a missing backbone key (BatchNorm ``num_batches_tracked``
        aside) or a shape mismatch.

        Returns the head keys left at their initialisation.
        """
        own = self.state_dict()
        head_prefixes = tuple(f"{name}." for name in HEAD_MODULES)
        check_state_dict_fits(
            own, state_dict, "cannot load pretrained weights",
            may_be_missing=lambda key: key.startswith(head_prefixes) or key.endswith("num_batches_tracked"),
        )
        self.load_state_dict(dict(state_dict), strict=False)
        return sorted(key for key in own if key not in state_dict and key.startswith(head_prefixes))
