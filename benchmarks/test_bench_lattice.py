"""Lattice build + filter speed, and the gain of filtering all channels in one pass.

The build + filter rounds are short, so there are 15 of them: the minimum then sees at least one
round that other work on the machine left alone.

Run: python -m pytest benchmarks/test_bench_lattice.py --benchmark-only
"""

import pytest
import torch

import rrm_ops
from conftest import photo_batch

CHANNELS = 21
# The features of RRM's training CRF.
CRF = rrm_ops.TRAINING_CRF


def _build_and_filter(features: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return rrm_ops.Lattice(features).filter(values)


def _filter_all_channels(lattice: rrm_ops.Lattice, values: torch.Tensor) -> torch.Tensor:
    return lattice.filter(values)


def _filter_per_channel(lattice: rrm_ops.Lattice, values: torch.Tensor) -> torch.Tensor:
    return torch.cat([lattice.filter(values[:, c : c + 1]) for c in range(values.shape[1])], dim=1)


@pytest.mark.parametrize("size", [161, 321, 642])
def test_bilateral_build_and_filter(benchmark, size):
    benchmark.group = "lattice d=5 bilateral, C=21"
    features = rrm_ops.bilateral_features(photo_batch(size), CRF.bilateral_sxy, CRF.bilateral_srgb)
    values = torch.rand(1, CHANNELS, size, size)
    benchmark.extra_info["pixels"] = size * size
    benchmark.pedantic(_build_and_filter, args=(features, values), rounds=15, warmup_rounds=1)


@pytest.mark.parametrize("size", [161, 321, 642])
def test_gaussian_build_and_filter(benchmark, size):
    benchmark.group = "lattice d=2 gaussian, C=21"
    features = rrm_ops.gaussian_features(1, size, size, CRF.gaussian_sxy)
    values = torch.rand(1, CHANNELS, size, size)
    benchmark.extra_info["pixels"] = size * size
    benchmark.pedantic(_build_and_filter, args=(features, values), rounds=15, warmup_rounds=1)


@pytest.mark.parametrize("mode", ["all_channels", "per_channel_loop"])
def test_all_channels_vs_per_channel_loop(benchmark, mode):
    benchmark.group = "filter C=21 at 321², d=5 (lattice prebuilt): one pass vs per-channel loop"
    lattice = rrm_ops.Lattice(rrm_ops.bilateral_features(photo_batch(321), 100.0 * 0.5, 15.0))
    values = torch.rand(1, CHANNELS, 321, 321)
    run = _filter_all_channels if mode == "all_channels" else _filter_per_channel
    benchmark.pedantic(run, args=(lattice, values), rounds=5, warmup_rounds=1)
