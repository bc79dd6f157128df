"""The permutohedral lattice op (docs/design.md#permutohedral-lattice) against oracles, and its contracts."""

import numpy as np
import pytest
import torch

import rrm_ops
from conftest import photo


def brute_force_gaussian(features: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Exact Σ_q exp(-|f_p - f_q|² / 2) v_q for features [P, d], values [P, C] (float64)."""
    f = features.double()
    kernel = torch.exp(-0.5 * torch.cdist(f, f) ** 2)
    return kernel @ values.double()


def test_matches_brute_force_gaussian_in_shape(astronaut_crop):
    image = torch.from_numpy(astronaut_crop)[None]
    features = rrm_ops.bilateral_features(image, sigma_xy=10.0, sigma_rgb=20.0)
    values = torch.rand(1, 3, *astronaut_crop.shape[:2], generator=torch.Generator().manual_seed(0))
    ours = rrm_ops.Lattice(features).filter(values)
    exact = brute_force_gaussian(features[0].flatten(1).T, values[0].flatten(1).T)
    ours_flat = ours[0].flatten(1).T.double()
    correlation = np.corrcoef(ours_flat.flatten().numpy(), exact.flatten().numpy())[0, 1]
    ratio = ours_flat / exact
    assert correlation >= 0.98
    # The lattice is a smaller-by-a-near-constant approximation (docs/design.md#permutohedral-lattice).
    assert 0.4 < ratio.mean() < 0.8
    assert ratio.std() / ratio.mean() < 0.2


def test_symmetric_normalisation_equals_definition(astronaut_crop):
    image = torch.from_numpy(astronaut_crop)[None]
    lattice = rrm_ops.Lattice(rrm_ops.bilateral_features(image, 8.0, 13.0))
    values = torch.rand(1, 4, *astronaut_crop.shape[:2])
    ones = torch.ones(1, 1, *astronaut_crop.shape[:2])
    norm = 1.0 / torch.sqrt(lattice.filter(ones) + 1e-20)
    expected = norm * lattice.filter(norm * values)
    torch.testing.assert_close(lattice.filter(values, normalize="symmetric"), expected, rtol=1e-6, atol=0)


def test_reverse_is_the_transpose(astronaut_crop):
    image = torch.from_numpy(astronaut_crop)[None]
    lattice = rrm_ops.Lattice(rrm_ops.bilateral_features(image, 5.0, 10.0))
    shape = (1, 2, *astronaut_crop.shape[:2])
    x = torch.rand(shape, dtype=torch.float64)
    y = torch.rand(shape, dtype=torch.float64)
    forward = (lattice.filter(x) * y).sum()
    transposed = (x * lattice.filter(y, reverse=True)).sum()
    torch.testing.assert_close(forward, transposed, rtol=1e-12, atol=0)


def test_gradcheck_float64(astronaut_crop):
    image = torch.from_numpy(astronaut_crop[:10, :12].copy())[None]
    lattice = rrm_ops.Lattice(rrm_ops.bilateral_features(image, 3.0, 20.0))
    values = torch.rand(1, 2, 10, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: lattice.filter(v, normalize="symmetric"), (values,))


@pytest.mark.parametrize("dim", [1, 2, 3, 5, 7, 16])
def test_any_feature_dimension_gives_a_normalising_filter(dim):
    generator = torch.Generator().manual_seed(dim)
    features = torch.randn(2, 300, dim, generator=generator) * 2
    lattice = rrm_ops.Lattice(features)
    out = lattice.filter(torch.ones(2, 300, 1))
    # Every point keeps at least its own (positive) share of the mass.
    assert torch.isfinite(out).all() and (out > 0).all()


def test_deterministic_across_runs_threads_and_batching(photo_batch):
    features = rrm_ops.bilateral_features(photo_batch, 6.0, 12.0)
    values = torch.rand(2, 21, 30, 40, generator=torch.Generator().manual_seed(1))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = rrm_ops.Lattice(features).filter(values)
        torch.set_num_threads(2)
        first = rrm_ops.Lattice(features).filter(values)
        second = rrm_ops.Lattice(features).filter(values)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(first, second)
    assert torch.equal(first, single)
    for i in range(2):
        alone = rrm_ops.Lattice(features[i : i + 1]).filter(values[i : i + 1])
        assert torch.equal(alone, first[i : i + 1])


def test_lattice_tensors_do_not_depend_on_thread_count(photo_batch):
    features = rrm_ops.bilateral_features(photo_batch, 6.0, 12.0)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = rrm_ops.Lattice(features).tensors.as_tuple()
        torch.set_num_threads(2)
        double = rrm_ops.Lattice(features).tensors.as_tuple()
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(single, double):
        assert torch.equal(a, b)


def test_points_layout_equals_image_layout(photo_batch):
    features = rrm_ops.bilateral_features(photo_batch, 6.0, 12.0)
    values = torch.rand(2, 3, 30, 40)
    image_layout = rrm_ops.Lattice(features).filter(values)
    points = features.flatten(2).transpose(1, 2)
    point_layout = rrm_ops.Lattice(points).filter(values.flatten(2).transpose(1, 2))
    assert torch.equal(point_layout, image_layout.flatten(2).transpose(1, 2))


@pytest.mark.parametrize("channels", [1, 3, 4, 13, 21, 24])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_channel_planes_equal_points_last_bitwise(photo_batch, channels, dtype, threads):
    # A [B, C, H, W] tensor is filtered from its channel planes, without a copy; every splat
    # strategy (one thread: scatter; two: gather or split scatter by channel count) must give
    # the bits of the points-last layout.
    lattice = rrm_ops.Lattice(rrm_ops.bilateral_features(photo_batch, 6.0, 12.0))
    planes = torch.rand(2, channels, 30, 40, dtype=dtype, generator=torch.Generator().manual_seed(channels))
    points_last = planes.flatten(2).transpose(1, 2).contiguous()
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        from_planes = lattice.filter(planes)
        from_points = lattice.filter(points_last)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(from_planes.flatten(2).transpose(1, 2), from_points)


def test_non_contiguous_inputs_equal_contiguous(photo_batch):
    features = rrm_ops.bilateral_features(photo_batch, 6.0, 12.0)
    values = torch.rand(2, 40, 30, 3).permute(0, 3, 2, 1)  # [2, 3, 30, 40], not contiguous
    assert not values.is_contiguous()
    lattice = rrm_ops.Lattice(features.transpose(2, 3).contiguous().transpose(2, 3))
    expected = rrm_ops.Lattice(features.contiguous()).filter(values.contiguous())
    assert torch.equal(lattice.filter(values), expected)


def test_empty_batch():
    lattice = rrm_ops.Lattice(torch.empty(0, 10, 5))
    out = lattice.filter(torch.empty(0, 10, 3))
    assert out.shape == (0, 10, 3)
    assert rrm_ops.Lattice(torch.empty(0, 5, 8, 8)).filter(torch.empty(0, 2, 8, 8)).shape == (0, 2, 8, 8)


def test_bilateral_features_layouts_agree(photo_batch):
    channels_last = rrm_ops.bilateral_features(photo_batch, 4.0, 9.0)
    channels_first = rrm_ops.bilateral_features(photo_batch.permute(0, 3, 1, 2).float(), 4.0, 9.0)
    assert channels_last.shape == (2, 5, 30, 40)
    assert torch.equal(channels_last, channels_first)
    assert channels_last[0, 0, 3, 7] == pytest.approx(7 / 4.0)  # x is the column index
    assert channels_last[0, 1, 3, 7] == pytest.approx(3 / 4.0)
    assert torch.equal(channels_last[:, :2], rrm_ops.gaussian_features(2, 30, 40, 4.0))


@pytest.mark.parametrize(
    "features, message",
    [
        (torch.rand(2, 10), "3-D"),
        (torch.rand(1, 10, 0), "feature dimension d in 1..16"),
        (torch.rand(1, 10, 17), "feature dimension d in 1..16"),
        (torch.tensor([[[0.0, float("nan")]]]), "NaN or infinite"),
        (torch.tensor([[[0.0, float("inf")]]]), "NaN or infinite"),
    ],
)
def test_bad_features_raise_clear_errors(features, message):
    with pytest.raises(RuntimeError, match=message):
        torch.ops.rrm_ops.lattice_build(features, 1)


def test_bad_feature_types_raise_clear_errors():
    with pytest.raises(TypeError, match="floating"):
        rrm_ops.Lattice(torch.zeros(1, 10, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\[B, P, K\] or \[B, K, H, W\]"):
        rrm_ops.Lattice(torch.zeros(10, 2))


def test_bad_values_raise_clear_errors():
    lattice = rrm_ops.Lattice(torch.rand(2, 12, 2))
    with pytest.raises(TypeError, match="values must be a float32 or float64"):
        lattice.filter(torch.ones(2, 12, 1, dtype=torch.int32))
    with pytest.raises(RuntimeError, match="B and P of the lattice"):
        lattice.filter(torch.ones(1, 12, 1))
    with pytest.raises(RuntimeError, match="B and P of the lattice"):
        lattice.filter(torch.ones(2, 11, 1))
    with pytest.raises(ValueError, match="pixels but the lattice has 12 points"):
        lattice.filter(torch.ones(2, 1, 3, 5))
    with pytest.raises(ValueError, match="normalize"):
        lattice.filter(torch.ones(2, 12, 1), normalize="both")
    with pytest.raises(RuntimeError, match="float32 or float64"):
        torch.ops.rrm_ops.lattice_filter(lattice.tensors.as_tuple(), torch.ones(2, 12, 1, dtype=torch.half), False)


def test_a_lattice_argument_holds_the_six_lattice_tensors():
    tensors = rrm_ops.Lattice(torch.rand(2, 12, 2)).tensors.as_tuple()
    with pytest.raises(ValueError, match="lattice must hold the 6 tensors of a lattice .* got 5"):
        torch.ops.rrm_ops.lattice_filter(tensors[:5], torch.ones(2, 12, 1), False)
    with pytest.raises(ValueError, match="bilateral must hold the 6 tensors of a lattice .* got 7"):
        torch.ops.rrm_ops.dense_crf_meanfield(torch.zeros(2, 3, 12), None, tensors, tensors + tensors[:1], 3.0, 10.0,
                                              1, None)


def test_values_on_another_device_raise_clear_error():
    lattice = rrm_ops.Lattice(torch.rand(1, 4, 2))
    with pytest.raises(ValueError, match="same device"):
        lattice.filter(torch.ones(1, 4, 1, device="meta"))


def test_bad_sigmas_raise_clear_errors(photo_batch):
    with pytest.raises(ValueError, match="sigma_rgb must be a positive"):
        rrm_ops.bilateral_features(photo_batch, 3.0, 0.0)
    with pytest.raises(ValueError, match="sigma_xy must be a positive"):
        rrm_ops.gaussian_features(1, 4, 4, -1.0)


def test_registered_ops_pass_opcheck(photo_batch):
    features = rrm_ops.bilateral_features(photo_batch[:1, :8, :9], 3.0, 10.0)
    for point_block in (1, 4):
        torch.library.opcheck(torch.ops.rrm_ops.lattice_build, (features.flatten(2).transpose(1, 2).contiguous(),
                                                                point_block))
    lattice = rrm_ops.Lattice(features)
    values = torch.rand(1, 72, 3, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.rrm_ops.lattice_filter, (lattice.tensors.as_tuple(), values, False))


def test_compiles_with_torch_compile(photo_batch):
    lattice = rrm_ops.Lattice(rrm_ops.bilateral_features(photo_batch[:1], 3.0, 10.0))
    values = torch.rand(1, 30 * 40, 2)

    def filtered_sum(v):
        return torch.ops.rrm_ops.lattice_filter(lattice.tensors.as_tuple(), v * 2, False).sum(-1)

    compiled = torch.compile(filtered_sum, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(values), filtered_sum(values))


def test_channel_blocks_do_not_change_bits(photo_batch):
    # The CPU filter processes channels in register blocks of 8, 4 and 1 (13 = 8 + 4 + 1);
    # every channel must come out as if filtered alone.
    lattice = rrm_ops.Lattice(rrm_ops.bilateral_features(photo_batch, 6.0, 12.0))
    values = torch.rand(2, 13, 30, 40, generator=torch.Generator().manual_seed(2))
    together = lattice.filter(values)
    for c in range(13):
        assert torch.equal(lattice.filter(values[:, c : c + 1]), together[:, c : c + 1])


def drop_padding_entries(tensors, points: int, padding: int):
    """The lattice of a build over points + padding points per item without the padding's entries."""
    offsets, weights, neighbours, splat_ptr, splat_entries, splat_weights = tensors
    d1 = offsets.shape[2]
    entry = splat_entries.long()
    item, local = (entry // d1).div(points + padding, rounding_mode="floor"), (entry // d1) % (points + padding)
    kept = local < points
    kept_before = torch.cat([torch.zeros(1, dtype=torch.long), kept.long().cumsum(0)])
    return (
        offsets[:, :points],
        weights[:, :points],
        neighbours,
        kept_before[splat_ptr.long()].int(),
        ((item * points + local) * d1 + entry % d1)[kept].int(),
        splat_weights[kept],
    )


@pytest.mark.parametrize("point_block", [4, 7])
def test_point_block_adds_padding_vertices_and_drops_their_entries(photo_batch, point_block):
    features = rrm_ops.bilateral_features(photo_batch[:, :29, :31], 5.0, 9.0).flatten(2).transpose(1, 2)
    points = features.shape[1]
    padding = -points % point_block
    padded = torch.cat([features, torch.zeros(2, padding, 5)], 1).contiguous()
    expected = drop_padding_entries(torch.ops.rrm_ops.lattice_build(padded, 1), points, padding)
    built = torch.ops.rrm_ops.lattice_build(features.contiguous(), point_block)
    assert padding > 0 and built[2].shape[1] > torch.ops.rrm_ops.lattice_build(features.contiguous(), 1)[2].shape[1]
    for got, want in zip(built, expected):
        assert torch.equal(got, want)


def test_point_block_must_be_positive():
    with pytest.raises(RuntimeError, match="point_block must be >= 1"):
        torch.ops.rrm_ops.lattice_build(torch.rand(1, 10, 2), 0)
