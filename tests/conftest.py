"""Shared fixtures: small crops of real photographs (scikit-image's sample images)."""

import numpy as np
import pytest
import torch
from skimage import data as sample_images


def photo(name: str, top: int, left: int, height: int, width: int) -> np.ndarray:
    """uint8 [height, width, 3] crop of a scikit-image sample photograph."""
    image = getattr(sample_images, name)()
    crop = image[top : top + height, left : left + width, :3]
    assert crop.shape == (height, width, 3), f"crop out of range for {name}"
    return np.ascontiguousarray(crop)


@pytest.fixture
def astronaut_crop() -> np.ndarray:
    return photo("astronaut", 80, 160, 36, 44)


@pytest.fixture
def photo_batch() -> torch.Tensor:
    """uint8 [2, 30, 40, 3]: two different photographs of the same size."""
    return torch.from_numpy(np.stack([photo("astronaut", 60, 180, 30, 40), photo("chelsea", 100, 150, 30, 40)]))
