"""Image/mask transforms of RRM's training and evaluation pipelines.

A transform is a callable ``(image, mask, rng) -> dict`` where ``image`` is uint8
``[H, W, 3]`` RGB, ``mask`` is uint8 ``[H, W]`` class indices (255 = ignore) or ``None``,
and ``rng`` is a ``numpy.random.Generator`` that supplies all randomness (so a sample is a
pure function of the generator's seed). It returns numpy arrays:

- ``image``: float32 ``[3, h, w]``, ImageNet-normalised; 0 in padding.
- ``image_uint8``: uint8 ``[3, h, w]``, the same pixels un-normalised; padding holds the
  ImageNet mean colour, i.e. exactly what the normalised padding value 0 stands for, so the
  CRF and the dense energy loss see the picture the network sees (as in RRM).
- ``roi``: float32 ``[h, w]``, 1 where the crop covers the image, 0 in padding (the
  ``rois`` of the dense energy loss).
- ``mask``: int64 ``[h, w]`` class indices, 255 in padding, on ignored pixels and
  everywhere when the sample has no mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
IGNORE_INDEX = 255

# The uint8 colour whose normalised value is (almost exactly) zero.
PAD_COLOUR = np.round(np.asarray(IMAGENET_MEAN) * 255.0).astype(np.uint8)


def normalize_image(image: np.ndarray) -> np.ndarray:
    """ImageNet-normalise an RGB image.

    Args:
        image: uint8 ``[H, W, 3]``.

    Returns:
        float32 ``[3, H, W]``: ``(image / 255 - mean) / std`` per channel.
    """
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    normalised = (image.astype(np.float32) / 255.0 - mean) / std
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


def _mask_or_ignore(mask: np.ndarray | None, height: int, width: int) -> np.ndarray:
    if mask is None:
        return np.full((height, width), IGNORE_INDEX, dtype=np.uint8)
    return mask


@dataclass(frozen=True)
class TrainTransform:
    """RRM's training augmentation: random rescale, horizontal flip, ImageNet
    normalisation and a random ``crop_size`` square crop with zero padding.

    The rescale factor is drawn uniformly from ``scale_range`` (RRM: 0.7-1.3) and the new
    size is ``(int(W * s), int(H * s))`` as in RRM; images are resized bilinearly, masks
    with nearest neighbour. When the rescaled image is smaller than the crop along an axis,
    it is placed at a random offset inside the crop and the rest is padding.
    """

    crop_size: int = 321
    scale_range: tuple[float, float] = (0.7, 1.3)
    flip_prob: float = 0.5

    def __call__(
        self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        height, width = image.shape[:2]
        mask = _mask_or_ignore(mask, height, width)

        scale = rng.uniform(*self.scale_range)
        new_size = (max(1, int(width * scale)), max(1, int(height * scale)))
        image = np.asarray(Image.fromarray(image).resize(new_size, Image.BILINEAR))
        mask = np.asarray(Image.fromarray(mask).resize(new_size, Image.NEAREST))

        if rng.uniform() < self.flip_prob:
            image = image[:, ::-1]
            mask = mask[:, ::-1]

        return _random_crop(image, mask, self.crop_size, rng)


def _crop_offsets(length: int, crop: int, rng: np.random.Generator) -> tuple[int, int, int]:
    """Return (offset in the source, offset in the crop, copied length) along one axis."""
    copied = min(length, crop)
    if length > crop:
        return int(rng.integers(0, length - crop + 1)), 0, copied
    return 0, int(rng.integers(0, crop - length + 1)), copied


def _random_crop(
    image: np.ndarray, mask: np.ndarray, crop: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    height, width = image.shape[:2]
    src_top, dst_top, copy_h = _crop_offsets(height, crop, rng)
    src_left, dst_left, copy_w = _crop_offsets(width, crop, rng)
    src = (slice(src_top, src_top + copy_h), slice(src_left, src_left + copy_w))
    dst = (slice(dst_top, dst_top + copy_h), slice(dst_left, dst_left + copy_w))

    image_crop = np.empty((crop, crop, 3), dtype=np.uint8)
    image_crop[...] = PAD_COLOUR
    image_crop[dst] = image[src]
    mask_crop = np.full((crop, crop), IGNORE_INDEX, dtype=np.int64)
    mask_crop[dst] = mask[src]
    roi = np.zeros((crop, crop), dtype=np.float32)
    roi[dst] = 1.0

    normalised = normalize_image(image_crop)
    normalised *= roi  # exact zeros in the padding, as RRM pads the normalised image
    return {
        "image": normalised,
        "image_uint8": np.ascontiguousarray(image_crop.transpose(2, 0, 1)),
        "roi": roi,
        "mask": mask_crop,
    }


@dataclass(frozen=True)
class EvalTransform:
    """Evaluation transform: normalisation only, full image, no randomness."""

    def __call__(
        self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        height, width = image.shape[:2]
        mask = _mask_or_ignore(mask, height, width)
        return {
            "image": normalize_image(image),
            "image_uint8": np.ascontiguousarray(image.transpose(2, 0, 1)),
            "roi": np.ones((height, width), dtype=np.float32),
            "mask": mask.astype(np.int64),
        }
