"""Inputs of the tests of the CUDA kernels, made from crops of real photographs (scikit-image's
samples) at sizes off every multiple of 4, 8 and 256, so that grids, padding points and the
CPU's blocks and lanes all end part-way."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import rrm_ops
from conftest import photo

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
# (height, width): 37 x 43 = 1591 and 29 x 31 = 899 pixels are odd; 1 x 1 and 2 x 3 have fewer
# pixels than a CPU block or a point block.
SIZES = ((37, 43), (29, 31), (1, 1), (2, 3))


def photos(batch: int, height: int, width: int, first: int = 0) -> torch.Tensor:
    """uint8 [batch, height, width, 3]: crops of different photographs."""
    crops = [photo(PHOTOS[(first + i) % len(PHOTOS)], 40 + 7 * i, 60 + 11 * i, height, width) for i in range(batch)]
    return torch.from_numpy(np.stack(crops)) if crops else torch.empty(0, height, width, 3, dtype=torch.uint8)


def smooth_maps(batch: int, channels: int, height: int, width: int, seed: int) -> torch.Tensor:
    """float32 [batch, channels, height, width] in [0, 1]: coarse noise upsampled, like CAMs."""
    if batch * channels == 0:
        return torch.empty(batch, channels, height, width)
    coarse = torch.rand(batch, channels, max(height // 6, 2), max(width // 6, 2),
                        generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False) ** 2


def scores(batch: int, labels: int, height: int, width: int, seed: int) -> torch.Tensor:
    """float32 [batch, labels, height, width] probabilities (a softmax over the labels)."""
    return torch.softmax(6 * smooth_maps(batch, labels, height, width, seed), dim=1)


def points(maps: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> contiguous [B, H*W, C] of the same dtype."""
    return maps.flatten(2).transpose(1, 2).contiguous()


def lattice_features(kind: str, images: torch.Tensor) -> torch.Tensor:
    """float32 [B, P, d] features of uint8 images [B, H, W, 3] for lattices of every code path:
    d = 5 and d = 2 (compile-time dimensions) and d = 1, 3 and 16 (run-time)."""
    batch, height, width, _ = images.shape
    rgb = images.permute(0, 3, 1, 2).float()
    luminance = rgb.mean(dim=1, keepdim=True)
    if kind == "bilateral":
        return points(rrm_ops.bilateral_features(images, 80.0, 13.0))
    if kind == "bilateral_fine":
        return points(rrm_ops.bilateral_features(images, 5.0, 10.0))
    if kind == "gaussian":
        return points(rrm_ops.gaussian_features(batch, height, width, 3.0))
    if kind == "luminance":
        return points(luminance / 8)
    if kind == "rgb":
        return points(rgb / 20)
    if kind == "patches":
        patches = F.unfold(F.pad(luminance, (1, 2, 1, 2), mode="replicate"), kernel_size=4)
        return patches.view(batch, 16, height * width).transpose(1, 2).contiguous() / 30
    raise ValueError(kind)


FEATURE_KINDS = ("bilateral", "bilateral_fine", "gaussian", "luminance", "rgb", "patches")
