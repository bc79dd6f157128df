"""The lattice's input range, its index tensors and its sizes: every input either gives the
correct lattice or a clear error, never a crash (docs/design.md#the-lattices-valid-input-range,
docs/design.md#trusted-lattices).

Inputs that crashed the process once run in a subprocess, so that a regression fails its test
instead of killing the test run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import rrm_ops
import rrm_ops.emulation as emulation
from cuda_cases import lattice_features, photos, points, scores
from reference.lattice_ref import LatticeRef
from rrm_ops.lattice import max_feature_magnitude

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
emu = emulation.ops


def _run(code: str) -> subprocess.CompletedProcess:
    """Runs `code` (with torch, rrm_ops and the shared test inputs imported) in a fresh interpreter."""
    prelude = textwrap.dedent("""\
        import json, resource, sys
        import torch
        import rrm_ops
        import rrm_ops.emulation as emulation
        from cuda_cases import lattice_features, photos, points, scores
        emu = emulation.ops
        """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=300)


def _raises_in_subprocess(call: str, error: str, message: str) -> None:
    """`call` (an expression) raises `error` with `message` in its text, in a subprocess."""
    result = _run(f"""
        try:
            {call}
        except {error} as exception:
            print("RAISED", exception)
        else:
            print("RETURNED")
        """)
    assert result.returncode == 0, f"exit status {result.returncode}: {result.stderr[-2000:]}"
    assert result.stdout.startswith("RAISED"), result.stdout
    assert message in result.stdout, result.stdout


# ---------------------------------------------------------------------------------------------
# Feature range

CRASH_CASES = {
    "one huge coordinate": ("rrm_ops.Lattice(torch.tensor([[[0.0], [3e9]]]))", "features has a coordinate"),
    "random features times 1e8": (
        "rrm_ops.Lattice(torch.randn(1, 2000, 5, generator=torch.Generator().manual_seed(0)) * 1e8)",
        "beyond the lattice's range"),
    "the op, d = 2": ("torch.ops.rrm_ops.lattice_build(torch.randn(2, 300, 2) * 1e9, 4)", "beyond the lattice's range"),
    "the emulated op": ("emu.lattice_build(torch.randn(2, 300, 5) * 1e8, 1)", "beyond the lattice's range"),
    "the emulated op, point blocks": ("emu.lattice_build(torch.randn(1, 301, 3) * 1e8, 4)",
                                      "beyond the lattice's range"),
    "dense_crf bilateral_srgb": ("rrm_ops.dense_crf(scores(1, 3, 20, 24, seed=0), photos(1, 20, 24), "
                                 "bilateral_srgb=1e-6)", "bilateral_srgb = 1e-06 is too small"),
    "dense_crf gaussian_sxy": ("rrm_ops.dense_crf(scores(1, 3, 20, 24, seed=0), photos(1, 20, 24), "
                               "gaussian_sxy=1e-7)", "gaussian_sxy = 1e-07 is too small for a 20 x 24 image"),
    "dense_crf bilateral_sxy": ("rrm_ops.dense_crf(scores(1, 3, 20, 24, seed=0), photos(1, 20, 24), "
                                "bilateral_sxy=1e-7)", "bilateral_sxy = 1e-07 is too small"),
    "emulated dense_crf": ("emu.dense_crf(scores(1, 3, 20, 24, seed=0), photos(1, 20, 24), None, 5, 3.0, 3.0, 80.0, "
                           "1e-6, 10.0, None)", "bilateral_srgb = 1e-06 is too small"),
    "crf_lattices": ("rrm_ops.crf_lattices(photos(1, 20, 24), bilateral_srgb=1e-6)",
                     "bilateral_srgb = 1e-06 is too small"),
    "DenseEnergyLoss sigma_rgb": ("rrm_ops.DenseEnergyLoss(sigma_rgb=1e-6)", "sigma_rgb = 1e-06 is too small"),
    "DenseEnergyLoss sigma_xy": (
        "rrm_ops.DenseEnergyLoss(sigma_xy=1e-7)(photos(1, 20, 24).permute(0, 3, 1, 2).float(), "
        "scores(1, 3, 20, 24, seed=0), torch.ones(1, 20, 24))", "sigma_xy = 1e-07 is too small"),
}


@pytest.mark.parametrize("name", sorted(CRASH_CASES))
def test_features_beyond_the_range_are_refused(name):
    call, message = CRASH_CASES[name]
    _raises_in_subprocess(call, "ValueError", message)


def test_the_limit_is_the_extensions():
    assert [max_feature_magnitude(d) for d in range(1, 17)] == [rrm_ops._C.max_feature_magnitude(d)
                                                                for d in range(1, 17)]
    assert max_feature_magnitude(5) == 945921.0
    for bad, error in ((0, ValueError), (17, ValueError), (2.0, TypeError)):
        with pytest.raises(error):
            max_feature_magnitude(bad)


@pytest.mark.parametrize("dim", range(1, 17))
@pytest.mark.parametrize("library", ["rrm_ops", "rrm_ops_emu"])
def test_features_at_the_limit_build_and_one_float_beyond_do_not(dim, library):
    limit = max_feature_magnitude(dim)
    build = getattr(torch.ops, library).lattice_build
    features = torch.full((1, 2, dim), limit)
    features[0, 1] = -limit
    build(features, 1)
    beyond = features.clone()
    beyond[0, 1, dim - 1] = torch.nextafter(torch.tensor(-limit), torch.tensor(-np.inf))
    with pytest.raises(ValueError, match="beyond the lattice's range"):
        build(beyond, 1)


def _near_limit_features(dim: int, seed: int) -> torch.Tensor:
    """float32 [2, 700, dim]: coordinates spread over the whole range, some at exactly ±limit."""
    limit = max_feature_magnitude(dim)
    generator = torch.Generator().manual_seed(seed)
    features = (torch.rand(2, 700, dim, generator=generator) * 2 - 1) * limit
    features[:, ::7] = torch.sign(features[:, ::7]) * limit
    # Clusters of near neighbours, so that points share vertices and vertices have neighbours.
    features[:, 350:] = features[:, 350:351] + torch.randn(2, 350, dim, generator=generator) * 3
    return features.clamp(-limit, limit)


@pytest.mark.parametrize("dim", [1, 2, 3, 5, 16])
def test_lattice_at_the_limit_is_the_references(dim):
    features = _near_limit_features(dim, seed=dim)
    offsets, weights, neighbours, *_ = torch.ops.rrm_ops.lattice_build(features, 1)
    first_item_vertices = int(offsets[1].min())
    for item in range(2):
        reference = LatticeRef(features[item].numpy())
        ours = offsets[item].numpy()
        pairs = np.unique(np.stack([ours.ravel(), reference.offsets.ravel()]), axis=1)
        vertices = first_item_vertices if item == 0 else neighbours.shape[1] - first_item_vertices
        assert pairs.shape[1] == vertices == reference.n_vertices
        np.testing.assert_array_equal(weights[item].numpy(), reference.weights)
    values = torch.rand(2, 700, 3, generator=torch.Generator().manual_seed(0))
    filtered = rrm_ops.Lattice(features).filter(values)
    for item in range(2):
        expected = LatticeRef(features[item].numpy()).filter(values[item].numpy())
        relative = np.abs(filtered[item].numpy() - expected) / np.maximum(np.abs(expected), 1e-12)
        assert np.median(relative) <= 1e-5
        assert np.mean(relative <= 1e-3) >= 0.99


@pytest.mark.parametrize("dim", [1, 2, 5, 16])
@pytest.mark.parametrize("point_block", [1, 4])
def test_cpu_and_emulated_cuda_agree_at_the_limit(dim, point_block):
    features = _near_limit_features(dim, seed=10 + dim)[:, :697]
    cpu = torch.ops.rrm_ops.lattice_build(features, point_block)
    emulated = emu.lattice_build(features, point_block)
    for ours, theirs in zip(cpu, emulated):
        assert torch.equal(ours, theirs)


def test_the_device_build_still_reads_the_device_once():
    features = _near_limit_features(5, seed=3)
    with emulation.counting() as counts:
        emu.lattice_build(features, 4)
    assert counts.host_reads == 1
    with emulation.counting() as counts, pytest.raises(ValueError, match="beyond the lattice's range"):
        emu.lattice_build(features * 2, 1)
    assert counts.host_reads == 1


def test_smallest_sigmas_are_accepted():
    """The sigmas the messages name as the smallest are accepted (up to float rounding)."""
    images = photos(1, 20, 24)
    limit = max_feature_magnitude(5)
    q = rrm_ops.dense_crf(scores(1, 3, 20, 24, seed=0), images, n_iter=2, gaussian_sxy=23 / max_feature_magnitude(2)
                          * 1.0001, bilateral_sxy=23 / limit * 1.0001, bilateral_srgb=255 / limit * 1.0001)
    assert torch.isfinite(q).all()


# ---------------------------------------------------------------------------------------------
# Index tensors

LATTICE_NAMES = ("offsets", "weights", "neighbours", "splat_ptr", "splat_entries", "splat_weights")

# name -> (the corruption, applied to a dict of clones of a 2-item lattice's tensors, the
# exception's class name, a part of its message).
CORRUPTIONS = {
    "offsets + 1e6": ("t['offsets'] += 10**6", "ValueError", "offsets must hold vertex ids"),
    "negative offset": ("t['offsets'][0, 5, 1] = -1", "ValueError", "offsets must hold vertex ids"),
    "offset of the other item": ("t['offsets'][0, 5, 1] = t['offsets'][1, 0, 0]", "ValueError",
                                 "offsets must hold vertex ids"),
    "neighbours + 1e6": ("t['neighbours'] += 10**6", "ValueError", "neighbours must hold"),
    "neighbour below -1": ("t['neighbours'][1, 3, 0] = -7", "ValueError", "neighbours must hold"),
    "neighbour in the other item": ("t['neighbours'][0, 0, 1] = t['offsets'][1, 0, 0]", "ValueError",
                                    "neighbours must hold"),
    "splat_entries + 1e6": ("t['splat_entries'] += 10**6", "ValueError", "splat_entries must hold entry ids"),
    "negative splat entry": ("t['splat_entries'][4] = -3", "ValueError", "splat_entries must hold entry ids"),
    "repeated splat entry": ("t['splat_entries'][1] = t['splat_entries'][0]", "ValueError",
                             "splat_entries must list"),
    "splat_ptr + 1e6": ("t['splat_ptr'] += 10**6", "ValueError", "splat_ptr must start at 0"),
    "decreasing splat_ptr": ("t['splat_ptr'][[5, 6]] = t['splat_ptr'][[6, 5]].clone() + torch.tensor([1, -1], "
                             "dtype=torch.int32)", "ValueError", "splat_ptr must start at 0"),
    "splat_ptr ending early": ("t['splat_ptr'][-1] -= 1", "ValueError", "splat_ptr must start at 0"),
    "splat_weights changed": ("t['splat_weights'][3] += 1", "ValueError", "splat_weights must be"),
    "random integers": (
        "g = torch.Generator().manual_seed(1)\n"
        "for name in ('offsets', 'neighbours', 'splat_ptr', 'splat_entries'):\n"
        "    t[name] = torch.randint(-2**31, 2**31 - 1, t[name].shape, generator=g, dtype=torch.int32)",
        "ValueError", "lattice: "),
    "offsets of int64": ("t['offsets'] = t['offsets'].long()", "TypeError", "offsets must have dtype"),
    "weights of float64": ("t['weights'] = t['weights'].double()", "TypeError", "weights must have dtype"),
    "neighbours of too few vertices": ("t['neighbours'] = t['neighbours'][:, :-1]", "RuntimeError",
                                       "neighbours must be"),
    "splat_entries too short": ("t['splat_entries'] = t['splat_entries'][:-1]", "RuntimeError",
                                "splat_entries must be"),
    "offsets without entries per point": ("t['offsets'] = t['offsets'][:, :, :0]", "RuntimeError", "must"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_malformed_lattices_are_refused_by_every_op(name):
    """Each corruption of a lattice is refused by lattice_filter and dense_crf_meanfield on the
    CPU and in the emulated CUDA build, in a subprocess (these inputs crashed the process once)."""
    corruption, error, message = CORRUPTIONS[name]
    result = _run(f"""
        images = photos(2, 13, 17)
        unary = -torch.log(scores(2, 3, 13, 17, seed=1)).flatten(2)
        values = points(scores(2, 4, 13, 17, seed=2))
        outcomes = {{}}
        for label, library in (("cpu", torch.ops.rrm_ops), ("emulated", emu)):
            built = library.lattice_build(lattice_features("bilateral", images), 1)
            t = dict(zip({LATTICE_NAMES!r}, (x.clone() for x in built)))
{textwrap.indent(corruption, " " * 12)}
            bad = [t[name] for name in {LATTICE_NAMES!r}]
            calls = {{"lattice_filter": lambda: library.lattice_filter(list(bad), values, False),
                      "dense_crf_meanfield": lambda: library.dense_crf_meanfield(
                          unary, None, list(built), list(bad), 3.0, 10.0, 2, None)}}
            for op, call in calls.items():
                try:
                    call()
                    outcome = "returned"
                except Exception as exception:
                    outcome = type(exception).__name__ + ": " + str(exception).splitlines()[0]
                outcomes[label + " " + op] = outcome
        print(json.dumps(outcomes))
        """)
    assert result.returncode == 0, f"exit status {result.returncode}: {result.stderr[-2000:]}"
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(outcomes) == 4
    for op, outcome in outcomes.items():
        assert outcome.startswith(error + ": ") and message in outcome, (op, outcome)


@pytest.mark.parametrize("library", ["rrm_ops", "rrm_ops_emu"])
def test_a_copy_of_a_lattice_passes_the_scan_with_the_same_result(library):
    ops = getattr(torch.ops, library)
    images = photos(3, 21, 19)
    values = points(scores(3, 5, 21, 19, seed=3))
    for kind, point_block in (("bilateral", 4), ("gaussian", 1), ("luminance", 3), ("patches", 1)):
        built = ops.lattice_build(lattice_features(kind, images), point_block)
        copied = [t.clone() for t in built]
        assert torch.equal(ops.lattice_filter(list(built), values, False),
                           ops.lattice_filter(list(copied), values, False))


def test_lattices_the_library_built_are_not_scanned():
    """Emulated CUDA: a built lattice is trusted (no host read); a copy, a lattice modified in
    place (even to the same values) and a mix of two built lattices are scanned (one host read)."""
    images = photos(2, 21, 19)
    values = points(scores(2, 5, 21, 19, seed=3))
    built = emu.lattice_build(lattice_features("bilateral", images), 1)
    other = emu.lattice_build(lattice_features("bilateral", photos(2, 21, 19, first=1)), 1)

    def host_reads(lattice) -> int:
        with emulation.counting() as counts:
            emu.lattice_filter(list(lattice), values, False)
        return counts.host_reads

    assert host_reads(built) == 0
    assert host_reads([t.clone() for t in built]) == 1
    mixed = list(built)
    mixed[1] = other[1]
    with emulation.counting() as counts, pytest.raises(ValueError, match="splat_weights must be"):
        emu.lattice_filter(list(mixed), values, False)
    assert counts.host_reads == 1
    built[0].add_(0)
    assert host_reads(built) == 1
    with torch.inference_mode():
        inference = emu.lattice_build(lattice_features("bilateral", images), 1)
        assert host_reads(inference) == 0
    crf = None
    with emulation.emulated():
        crf = rrm_ops.crf_lattices(images)
    unary = -torch.log(scores(2, 3, 21, 19, seed=1)).flatten(2)
    with emulation.counting() as counts:
        emu.dense_crf_meanfield(unary, None, list(crf.gaussian.tensors.as_tuple()),
                                list(crf.bilateral.tensors.as_tuple()), 3.0, 10.0, 2, None)
    assert counts.host_reads == 1  # the unary's finiteness, as before


def test_a_lattice_modified_in_place_is_scanned_on_the_cpu():
    images = photos(2, 13, 17)
    lattice = rrm_ops.Lattice(lattice_features("bilateral", images))
    values = points(scores(2, 4, 13, 17, seed=2))
    lattice.filter(values)
    lattice.tensors.neighbours[0, 0, 0] = 10**6
    with pytest.raises(ValueError, match="neighbours must hold"):
        lattice.filter(values)


# ---------------------------------------------------------------------------------------------
# Sizes


def test_an_oversized_dense_crf_allocates_nothing_before_refusing():
    """1 x 1 x 20000 x 20000 expanded inputs (no memory of their own): refused before the unary,
    the features or a lattice is allocated. Peak memory is measured in the subprocess."""
    result = _run("""
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        scores = torch.ones(1, 1, 1, 1).expand(1, 2, 20000, 20000)
        image = torch.zeros(1, 1, 1, 3, dtype=torch.uint8).expand(1, 20000, 20000, 3)
        outcomes = []
        for call in (lambda: rrm_ops.dense_crf(scores, image),
                     lambda: emu.dense_crf(scores, image, None, 10, 3.0, 3.0, 80.0, 13.0, 10.0, None)):
            try:
                call()
                outcomes.append("returned")
            except ValueError as exception:
                outcomes.append(str(exception).splitlines()[0])
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        print(json.dumps({"outcomes": outcomes, "grown_mb": grown_mb}))
        """)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for outcome in report["outcomes"]:
        assert "1 images of 20000 x 20000 pixels are too many for int32 lattice indices" in outcome
    assert report["grown_mb"] < 200


@pytest.mark.parametrize("library", ["rrm_ops", "rrm_ops_emu"])
def test_oversized_features_are_refused_before_anything_is_read(library):
    build = getattr(torch.ops, library).lattice_build
    features = torch.zeros(1, 1, 5).expand(1, 2**28, 5)
    with pytest.raises(RuntimeError, match="too many points for int32 lattice indices"):
        build(features, 1)
    # 2^30 - 2 entries fit, but not once padded to a multiple of 4.
    features = torch.zeros(1, 1, 1).expand(1, 2**29 - 1, 1)
    with pytest.raises(RuntimeError, match="padded to a multiple of point_block"):
        build(features, 4)
    with pytest.raises(ValueError, match="too many points for int32 lattice indices"):
        rrm_ops.Lattice(torch.zeros(1, 1, 5).expand(1, 2**28, 5))


@pytest.mark.parametrize(("option", "value", "message"), [
    ("energy_sigma_rgb", 1e-6, "energy_sigma_rgb = 1e-06 is too small for intensities 0..255"),
    ("energy_sigma_xy", 1e-9, "energy_sigma_xy = 1e-09 is too small for crops of 112 pixels"),
])
def test_the_training_config_refuses_energy_sigmas_beyond_the_range(option, value, message):
    from rrm.training.config import TrainConfig
    from rrm.utils.errors import ConfigError

    config = TrainConfig(**{option: value})
    with pytest.raises(ConfigError, match=message):
        config.validate()
