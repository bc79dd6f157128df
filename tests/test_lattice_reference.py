"""The lattice op against the slow numpy reference of the same scheme (tests/reference)."""

import numpy as np
import pytest
import torch

import rrm_ops
from conftest import photo
from reference.lattice_ref import LatticeRef

CASES = [
    # (photo, feature kind, sigma_xy, sigma_rgb)
    ("astronaut", "bilateral", 80.0, 13.0),
    ("astronaut", "bilateral", 5.0, 10.0),
    ("chelsea", "bilateral", 20.0, 5.0),
    ("coffee", "bilateral", 50.0, 15.0),
    ("astronaut", "gaussian", 3.0, None),
    ("chelsea", "gaussian", 1.5, None),
]


def _features(image: np.ndarray, kind: str, sigma_xy: float, sigma_rgb: float | None) -> torch.Tensor:
    batch = torch.from_numpy(image)[None]
    if kind == "bilateral":
        return rrm_ops.bilateral_features(batch, sigma_xy, sigma_rgb)
    return rrm_ops.gaussian_features(1, image.shape[0], image.shape[1], sigma_xy)


@pytest.mark.parametrize("name, kind, sigma_xy, sigma_rgb", CASES)
@pytest.mark.parametrize("channels", [1, 3, 21])
def test_filter_matches_numpy_reference(name, kind, sigma_xy, sigma_rgb, channels):
    image = photo(name, 90, 120, 41, 53)
    features = _features(image, kind, sigma_xy, sigma_rgb)
    values = torch.rand(1, channels, 41, 53, generator=torch.Generator().manual_seed(channels))
    ours = rrm_ops.Lattice(features).filter(values)[0].flatten(1).T.numpy()
    reference = LatticeRef(features[0].flatten(1).T.contiguous().numpy()).filter(values[0].flatten(1).T.numpy())
    relative = np.abs(ours - reference) / np.maximum(np.abs(reference), 1e-12)
    assert np.median(relative) <= 1e-5
    assert np.mean(relative <= 1e-3) >= 0.99


def test_reverse_matches_numpy_reference():
    image = photo("chelsea", 50, 60, 33, 29)
    features = _features(image, "bilateral", 6.0, 12.0)
    values = torch.rand(1, 4, 33, 29, dtype=torch.float64)
    ours = rrm_ops.Lattice(features).filter(values, reverse=True)[0].flatten(1).T.numpy()
    reference = LatticeRef(features[0].flatten(1).T.contiguous().numpy()).filter(
        values[0].flatten(1).T.numpy(), reverse=True
    )
    np.testing.assert_allclose(ours, reference, rtol=1e-6)


@pytest.mark.parametrize("dim", [1, 3, 7, 16])
def test_runtime_dimensions_match_numpy_reference(dim):
    generator = torch.Generator().manual_seed(dim)
    features = torch.randn(1, 400, dim, generator=generator) * 1.5
    values = torch.rand(1, 400, 2, generator=generator)
    ours = rrm_ops.Lattice(features).filter(values)[0].numpy()
    reference = LatticeRef(features[0].numpy()).filter(values[0].numpy())
    relative = np.abs(ours - reference) / np.maximum(np.abs(reference), 1e-12)
    assert np.median(relative) <= 1e-5
    assert np.mean(relative <= 1e-3) >= 0.99


@pytest.mark.parametrize("dim", [2, 5])
def test_build_equals_reference_whatever_the_key_range(dim):
    """The CPU build compares keys packed into 64-bit words (64 / d bits per coordinate) while
    their coordinates fit and falls back to whole rows for a block where they stop fitting.
    Points 0..2499 are small and the rest so large that their coordinates do not fit 12 bits,
    so at d = 5, with blocks of 2048 points, one block is packed, one falls back from point
    2500 on and one never fits (d = 2 packs them all). The lattice must be the reference's up
    to the numbering of the vertices."""
    generator = torch.Generator().manual_seed(dim)
    features = torch.randn(1, 5000, dim, generator=generator) * 2
    features[0, 2500:] *= 3000
    offsets, weights, neighbours, *_ = torch.ops.rrm_ops.lattice_build(features, 1)
    reference = LatticeRef(features[0].numpy())
    ours = offsets[0].numpy()
    pairs = np.unique(np.stack([ours.ravel(), reference.offsets.ravel()]), axis=1)
    assert pairs.shape[1] == neighbours.shape[1] == reference.n_vertices
    to_reference = np.empty(reference.n_vertices, np.int64)
    to_reference[pairs[0]] = pairs[1]
    np.testing.assert_array_equal(to_reference[ours], reference.offsets)
    np.testing.assert_array_equal(weights[0].numpy(), reference.weights)
    mapped = np.where(neighbours.numpy() >= 0, to_reference[neighbours.numpy()], -1)
    np.testing.assert_array_equal(mapped.transpose(0, 2, 1), reference.neighbours[:, :, to_reference])
