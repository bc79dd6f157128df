"""Reliable region mining on a batch: ours vs the per-image numpy + pydensecrf pipeline.

Run: python -m pytest benchmarks/test_bench_mining.py --benchmark-only
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import rrm_ops
from conftest import photo_batch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference.mining_ref import reliable_region_labels_ref  # noqa: E402

SIZE, CLASSES = 321, 20


def _inputs():
    images = photo_batch(SIZE, batch=4)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cams = np.zeros((4, CLASSES, SIZE, SIZE), np.float32)
    labels = np.zeros((4, CLASSES), np.float32)
    for b in range(4):
        for c in rng.choice(CLASSES, size=1 + b % 3, replace=False):
            cy, cx, r = rng.uniform(0, SIZE, 2).tolist() + [rng.uniform(30, 90)]
            cams[b, c] = 2 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            labels[b, c] = 1
    return images, cams, labels


def _ours(images, cams, labels):
    return rrm_ops.reliable_region_labels(torch.from_numpy(cams), torch.from_numpy(labels), images)


def _reference_loop(images, cams, labels):
    return [reliable_region_labels_ref(cams[b], labels[b], images[b].numpy()) for b in range(len(cams))]


@pytest.mark.parametrize("implementation", ["rrm_ops", "numpy_pydensecrf_per_image"])
def test_mining_batch_of_4(benchmark, implementation):
    benchmark.group = "reliable region mining, 4 x 321², 20 classes (1-3 present)"
    run = _ours if implementation == "rrm_ops" else _reference_loop
    benchmark.pedantic(run, args=_inputs(), rounds=5, warmup_rounds=1)
