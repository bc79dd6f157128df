"""Real-photograph inputs for the benchmarks, and what the JSON report records of the machine."""

import os

import numpy as np
import torch
from skimage import data as sample_images
from skimage.transform import resize


def photo_batch(size: int, batch: int = 1) -> torch.Tensor:
    """uint8 [batch, size, size, 3]: scikit-image sample photographs resized to size²."""
    names = ["astronaut", "chelsea", "coffee", "rocket"]
    images = []
    for i in range(batch):
        image = getattr(sample_images, names[i % len(names)])()[..., :3]
        resized = resize(image, (size, size), order=1, preserve_range=True, anti_aliasing=True)
        images.append(np.round(resized).astype(np.uint8))
    return torch.from_numpy(np.stack(images))


def pytest_benchmark_update_machine_info(config, machine_info: dict) -> None:
    """Records what tools/benchmark_table.py quotes beside the tables: torch, threads and cores."""
    machine_info["torch_version"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["cpu_count"] = os.cpu_count()
