"""The emulated CUDA build (rrm_ops.emulation) itself, and what it shows about the CUDA code:
results independent of the thread order, every kernel launched, the launches and host
synchronisations of each op call, and no device value read on the host behind the counter."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import rrm_ops
import rrm_ops.emulation as emulation
from cuda_cases import lattice_features, photos, points, scores, smooth_maps
from cuda_targets import assert_bitwise_equal, uninitialised_memory_filled  # noqa: F401 (a fixture)
from op_arguments import DENSE_CRF, MINING

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
probe = emulation._emulated
emu = emulation.ops
OPS = ("lattice_build", "lattice_filter", "dense_crf_meanfield", "dense_crf", "prune_reliable_labels",
       "reliable_region_labels")
# Registered once for every device; in the emulated build its device branches are the CUDA ones.
DEVICE_GENERIC_OPS = ("dense_crf",)


@pytest.fixture(autouse=True)
def index_order():
    """Every test starts, and leaves the emulation, in index order."""
    emulation.set_thread_order(None)
    yield
    emulation.set_thread_order(None)


# ---------------------------------------------------------------------------------------------
# The emulated runtime


def test_ops_have_the_schemas_of_rrm_ops_and_emulated_cuda_kernels_only():
    for op in OPS:
        real = str(torch._C._get_schema(f"rrm_ops::{op}", ""))
        emulated = str(torch._C._get_schema(f"rrm_ops_emu::{op}", ""))
        assert emulated == real.replace("rrm_ops::", "rrm_ops_emu::", 1)
        key = "CompositeExplicitAutograd" if op in DEVICE_GENERIC_OPS else "CPU"
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"rrm_ops_emu::{op}", key)
        assert not torch._C._dispatch_has_kernel_for_dispatch_key(f"rrm_ops_emu::{op}", "CUDA")
        # The emulated build registers none of its copies of the CPU kernels under rrm_ops.
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"rrm_ops::{op}", key)


def test_threads_run_in_index_order_or_in_a_seeded_permutation():
    index_order = probe.thread_order_of(3, 64)
    assert torch.equal(index_order, torch.arange(192))
    emulation.set_thread_order(5)
    first = probe.thread_order_of(3, 64)
    second = probe.thread_order_of(3, 64)
    emulation.set_thread_order(5)
    assert torch.equal(probe.thread_order_of(3, 64), first)
    emulation.set_thread_order(6)
    other_seed = probe.thread_order_of(3, 64)
    for order in (first, second, other_seed):
        assert torch.equal(order.sort().values, torch.arange(192)) and not torch.equal(order, index_order)
    assert not torch.equal(first, second) and not torch.equal(first, other_seed)


@pytest.mark.parametrize("blocks, threads", [(0, 64), (1, 0), (1, 1025), (2**31, 1)])
def test_an_invalid_launch_configuration_runs_nothing_and_is_reported(blocks, threads):
    with pytest.raises(RuntimeError, match="invalid configuration argument"):
        probe.thread_order_of(blocks, threads)


def test_exclusive_sum_in_place_and_not():
    values = torch.randint(-50, 100, (1000,), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
    expected = torch.cat([torch.zeros(1, dtype=torch.int32), values.cumsum(0, dtype=torch.int32)[:-1]])
    for in_place in (False, True):
        assert torch.equal(probe.exclusive_sum(values, in_place), expected)
    assert torch.equal(probe.exclusive_sum(values[:0], False), values[:0])


def _radix_digits(keys: np.ndarray, bits: int, signed: bool, begin_bit: int, end_bit: int) -> np.ndarray:
    unsigned = keys.view(np.uint32 if bits == 32 else np.uint64).astype(np.uint64)
    if signed:
        unsigned ^= np.uint64(1) << np.uint64(bits - 1)
    width = end_bit - begin_bit
    mask = (1 << width) - 1 if width < 64 else (1 << 64) - 1
    return (unsigned >> np.uint64(begin_bit)) & np.uint64(mask)


@pytest.mark.parametrize("unsigned_keys", [False, True])
@pytest.mark.parametrize("begin_bit, end_bit", [(0, 32), (0, 8), (4, 12), (31, 32), (16, 16)])
def test_radix_sort_pairs_is_stable_and_orders_by_the_bit_range_only(unsigned_keys, begin_bit, end_bit):
    generator = torch.Generator().manual_seed(begin_bit * 100 + end_bit)
    keys = torch.randint(-(2**31), 2**31 - 1, (3000,), dtype=torch.int32, generator=generator)
    keys[::7] = keys[3]  # many equal keys
    values = torch.arange(3000, dtype=torch.int32)
    digits = _radix_digits(keys.numpy(), 32, not unsigned_keys, begin_bit, end_bit)
    order = torch.from_numpy(np.argsort(digits, kind="stable"))
    sorted_keys, sorted_values = probe.radix_sort_pairs(keys, values, unsigned_keys, begin_bit, end_bit)
    assert torch.equal(sorted_keys, keys[order]) and torch.equal(sorted_values, values[order])


@pytest.mark.parametrize("begin_bit, end_bit", [(0, 64), (0, 41), (32, 64), (0, 16)])
def test_radix_sort_keys_is_stable_and_orders_by_the_bit_range_only(begin_bit, end_bit):
    generator = torch.Generator().manual_seed(end_bit)
    keys = torch.randint(-(2**62), 2**62, (40,), dtype=torch.int64, generator=generator)
    keys[10:14] = keys[10] ^ 0xFFFF  # equal high bits, different low bits
    digits = _radix_digits(keys.numpy(), 64, False, begin_bit, end_bit)
    expected = keys[torch.from_numpy(np.argsort(digits, kind="stable"))]
    assert torch.equal(probe.radix_sort_keys(keys, begin_bit, end_bit), expected)
    with pytest.raises(RuntimeError, match="bit range \\[0, 65\\) is not within the 64 bits"):
        probe.radix_sort_keys(keys, 0, 65)


def _cub_calls():
    keys = torch.arange(100, 0, -1, dtype=torch.int32)
    return {
        "cub::DeviceScan::ExclusiveSum": lambda **extra: probe.exclusive_sum(keys, True, **extra),
        "cub::DeviceRadixSort::SortPairs": lambda **extra: probe.radix_sort_pairs(keys, keys, False, 0, 32, **extra),
        "cub::DeviceRadixSort::SortKeys": lambda **extra: probe.radix_sort_keys(keys.long(), 0, 64, **extra),
    }


@pytest.mark.parametrize("algorithm", sorted(_cub_calls()))
def test_cub_temporary_storage_must_hold_what_the_size_query_asked_for(algorithm):
    call = _cub_calls()[algorithm]
    with emulation.counting() as counts:
        call(allocated_extra=0, passed_extra=0)
        call(allocated_extra=1000, passed_extra=1000)
        # temp_storage_bytes below the size query's: CUB's cudaErrorInvalidValue.
        with pytest.raises(RuntimeError, match="invalid argument"):
            call(allocated_extra=0, passed_extra=-1)
        # A large enough temp_storage_bytes for a smaller block would overrun it on a GPU.
        with pytest.raises(RuntimeError, match="its temporary storage holds .* its size query asked for"):
            call(allocated_extra=-1, passed_extra=0)
    assert counts.launches == {algorithm: 2} and counts.live_allocations == 0


# ---------------------------------------------------------------------------------------------
# Launches and host synchronisations of each op call


def _op_calls():
    """name -> (call of the emulated op, its expected launches, its expected host reads)."""
    images = photos(2, 29, 31)
    features = lattice_features("bilateral", images)
    lattice = emu.lattice_build(features, 1)
    # Built by the emulated ops, which trust the lattices they built (no scan, no host read).
    with emulation.emulated():
        crf = rrm_ops.crf_lattices(images)
    crf_tensors = crf.gaussian.tensors.as_tuple(), crf.bilateral.tensors.as_tuple()
    unary = -torch.log(scores(2, 5, 29, 31, seed=1)).flatten(2)
    mask = torch.tensor([[True, False, True, True, False], [True] * 5])
    cams = smooth_maps(2, 4, 29, 31, seed=2)
    q = scores(2, 5, 29, 31, seed=3).flatten(2)
    cls_labels = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1]])
    build = {"embed_kernel": 1, "insert_kernel": 1, "elect_owner_kernel": 1, "owner_flag_kernel": 1,
             "cub::DeviceScan::ExclusiveSum": 2, "offsets_kernel": 1, "neighbours_kernel": 1, "iota_kernel": 1,
             "cub::DeviceRadixSort::SortPairs": 1, "splat_weights_kernel": 1}
    prune = {"summarise_kernel": 1, "cub::DeviceRadixSort::SortKeys": 1, "threshold_kernel": 1, "label_kernel": 1}

    def meanfield(n_iter: int, gather: bool) -> dict[str, int]:
        # Norms: a filter of ones per lattice (d + 1 = 3 and 6 blurs); per iteration a splat and
        # blur per lattice; n_iter + 1 updates.
        launches = {"fill_ones_kernel": 2, "norm_kernel": 2, "slice_kernel": 2, "splat_kernel": 2 + 2 * n_iter,
                    "blur_kernel": 9 * (1 + n_iter), "update_kernel": n_iter + 1}
        return {**launches, "gather_unary_kernel": 1} if gather else launches

    def plus(*parts: dict[str, int]) -> dict[str, int]:
        total: dict[str, int] = {}
        for part in parts:
            for name, n in part.items():
                total[name] = total.get(name, 0) + n
        return dict(sorted(total.items()))

    twice_build = plus(build, build)
    return {
        "lattice_build": (lambda: emu.lattice_build(features, 1), build, 1),
        "lattice_build (point blocks)": (lambda: emu.lattice_build(features, 4), build, 1),
        "lattice_build (empty)": (lambda: emu.lattice_build(features[:0], 1), {}, 0),
        "lattice_filter": (lambda: emu.lattice_filter(lattice, points(cams), False),
                           {"splat_kernel": 1, "blur_kernel": 6, "slice_kernel": 1}, 0),
        "lattice_filter (float64, reverse)": (lambda: emu.lattice_filter(lattice, points(cams).double(), True),
                                              {"splat_kernel": 1, "blur_kernel": 6, "slice_kernel": 1}, 0),
        "dense_crf_meanfield": (lambda: emu.dense_crf_meanfield(unary, None, *crf_tensors, 3.0, 10.0, 10, None),
                                meanfield(10, True), 1),
        "dense_crf_meanfield (label mask)": (lambda: emu.dense_crf_meanfield(unary, mask, *crf_tensors, 3.0, 10.0, 3,
                                                                             None),
                                             meanfield(3, True), 1),
        "dense_crf": (lambda: emu.dense_crf(scores(2, 5, 29, 31, seed=1), images, **DENSE_CRF),
                      plus(twice_build, meanfield(10, True)), 4),
        "prune_reliable_labels": (lambda: emu.prune_reliable_labels(cams.flatten(2), q, q, 32.0, 0.6, 0.1, 0.8, 0.8,
                                                                    255, None), prune, 0),
        "reliable_region_labels": (lambda: emu.reliable_region_labels(cams, cls_labels, images, **MINING),
                                   plus(twice_build, meanfield(10, False), {"unary_kernel": 1}, prune), 2),
    }


def _call_emulated_glue(op_name: str, *args):
    """Runs op_name's emulated CUDA glue on args whatever their devices: with a meta tensor among
    them the dispatcher would pick the meta kernel instead."""
    return getattr(emu, op_name).default.redispatch(torch._C.DispatchKeySet(torch._C.DispatchKey.CPU), *args)


def _mixed_device_calls():
    """name -> (op, its arguments, the index of the argument put on the meta device (and within a
    lattice argument, of its tensor), the start of the error it must give)."""
    images = photos(1, 5, 6)
    lattice = emu.lattice_build(lattice_features("bilateral", images), 1)
    crf = rrm_ops.crf_lattices(images)
    crf_tensors = crf.gaussian.tensors.as_tuple(), crf.bilateral.tensors.as_tuple()
    unary = -torch.log(scores(1, 3, 5, 6, seed=1)).flatten(2)
    mask = torch.tensor([[True, False, True]])
    cams = smooth_maps(1, 2, 5, 6, seed=2)
    q = scores(1, 3, 5, 6, seed=3).flatten(2)
    filter_args = (lattice, points(scores(1, 3, 5, 6, seed=4)), False)
    meanfield_args = (unary, mask, *crf_tensors, 3.0, 10.0, 1, None)
    prune_args = (cams.flatten(2), q, q, 32.0, 0.6, 0.1, 0.8, 0.8, 255, torch.tensor([[0, 1, 2]], dtype=torch.int32))
    mining_args = (cams, torch.tensor([[1, 0]]), images, *MINING.values())
    return {
        "lattice_filter (values)": ("lattice_filter", filter_args, 1, "offsets is on cpu but values is on meta"),
        "lattice_filter (splat_weights)": ("lattice_filter", filter_args, (0, 5),
                                           "splat_weights is on meta but values is on cpu"),
        "dense_crf_meanfield (unary)": ("dense_crf_meanfield", meanfield_args, 0,
                                        "label_mask is on cpu but unary is on meta"),
        "dense_crf_meanfield (label_mask)": ("dense_crf_meanfield", meanfield_args, 1,
                                             "label_mask is on meta but unary is on cpu"),
        "dense_crf_meanfield (bilateral_splat_ptr)": ("dense_crf_meanfield", meanfield_args, (3, 3),
                                                      "bilateral_splat_ptr is on meta but unary is on cpu"),
        "prune_reliable_labels (q_high)": ("prune_reliable_labels", prune_args, 2,
                                           "q_high is on meta but cams is on cpu"),
        "prune_reliable_labels (q_labels)": ("prune_reliable_labels", prune_args, 9,
                                             "q_labels is on meta but cams is on cpu"),
        "reliable_region_labels (images)": ("reliable_region_labels", mining_args, 2,
                                            "images is on meta but cams is on cpu"),
        "reliable_region_labels (cls_labels)": ("reliable_region_labels", mining_args, 1,
                                                "cls_labels must be on the CPU or on cpu with cams, got meta"),
    }


@pytest.mark.parametrize("name", sorted(_mixed_device_calls()))
def test_arguments_on_two_devices_are_refused_naming_the_argument(name):
    """The CUDA glue checks that its arguments share a device before anything else, so that a
    user mixing devices is told which argument is elsewhere (on a GPU, before the CUDAGuard,
    which would fail on a CPU tensor naming none). A meta tensor stands for the other device."""
    op_name, args, moved, message = _mixed_device_calls()[name]
    mixed = list(args)
    if isinstance(moved, tuple):
        argument, tensor = moved
        mixed[argument] = [t.to("meta") if i == tensor else t for i, t in enumerate(mixed[argument])]
    else:
        mixed[moved] = mixed[moved].to("meta")
    with emulation.counting() as counts, pytest.raises(ValueError, match=re.escape(message)):
        _call_emulated_glue(op_name, *mixed)
    assert counts.launches == {} and counts.host_reads == 0


@pytest.mark.parametrize(("batch", "classes", "pixels", "message"), [
    (1, 2, 2**31, "sorts at most 2147483647 pixels per call (B * P), got 1 * 2147483648"),
    (2**16, 2, 2**15, "sorts at most 2147483647 pixels per call (B * P), got 65536 * 32768"),
    (2, 2**31 - 1, 1, "needs the bits of B - 1 and of C + 1 to fit in 32 together, got B = 2 and C = 2147483647"),
])
def test_prune_refuses_a_batch_beyond_its_sort(batch, classes, pixels, message):
    """The quantile sort counts items in an int and packs (image, class, score) into 64 bits; a
    larger batch is refused before anything is allocated (meta tensors)."""
    cams = torch.empty(batch, classes, pixels, device="meta")
    q = torch.empty(batch, classes + 1, pixels, device="meta")
    # ignore_index -1 is no label whatever C is, so the sort's limits are what refuses.
    with pytest.raises(ValueError, match=re.escape(message)):
        _call_emulated_glue("prune_reliable_labels", cams, q, q, 32.0, 0.6, 0.1, 0.8, 0.8, -1, None)


def _launched_kernels() -> set[str]:
    return {name for path in CSRC.glob("*/*.cu") for name in re.findall(r"__global__\s+void\s+(\w+)", path.read_text())}


@pytest.mark.parametrize("name", sorted(_op_calls()))
def test_launches_and_host_reads_of_each_op_call(name):
    """The kernels each op call launches, and its host reads: one per lattice build (the vertex
    count, read with the check that the features are finite), one for the mean field's check
    that the unary is finite (read with the present-label count under a label mask), one for
    dense_crf's check of its scores; mining's present-label count rides on its Gaussian lattice
    build's read. No explicit synchronisation, and every emulated allocation is freed."""
    call, launches, host_reads = _op_calls()[name]
    with emulation.counting() as counts:
        call()
    assert counts.launches == dict(sorted(launches.items()))
    assert (counts.host_reads, counts.synchronizations, counts.live_allocations) == (host_reads, 0, 0)


def test_mining_runs_the_present_labels_only_without_a_read_of_its_own():
    """The device mining's CRFs run in slots for the batch's largest present count (background
    included) padded to 4 lanes, 4 here instead of the 24 of all 21 labels: the pruning op gets
    Q over those slots. The count is read with the Gaussian lattice build's vertex count."""
    images = photos(2, 29, 31)
    cams = 3 * smooth_maps(2, 20, 29, 31, seed=2)
    cls_labels = torch.zeros(2, 20, dtype=torch.long)
    cls_labels[0, 5] = cls_labels[1, [0, 3, 7]] = 1
    with torch.profiler.profile(record_shapes=True) as profile, emulation.counting() as counts:
        emu.reliable_region_labels(cams, cls_labels, images, **MINING)
    prune_inputs = [event.input_shapes for event in profile.events()
                    if event.name == "rrm_ops_emu::prune_reliable_labels"]
    assert [shapes[1] for shapes in prune_inputs] == [[2, 4, 29 * 31]]
    assert counts.host_reads == 2


def test_every_kernel_is_launched():
    with emulation.counting() as counts:
        for call, _, _ in _op_calls().values():
            call()
    launched = {name for name in counts.launches if not name.startswith("cub::")}
    assert launched == _launched_kernels()


def test_dense_energy_loss_reads_the_device_once_per_training_step():
    """The vertex count of its one lattice build; the backward filters nothing (RRM's gradient)
    or once (exact), without reads; values are checked on the host only for CPU tensors."""
    images = photos(2, 29, 31).permute(0, 3, 1, 2).float()
    probs = scores(2, 4, 29, 31, seed=4).requires_grad_()
    rois = torch.ones(2, 29, 31)
    seg_label = torch.randint(0, 5, (2, 1, 29, 31), generator=torch.Generator().manual_seed(0))
    for gradient, filters in (("rrm", 1), ("exact", 2)):
        with emulation.emulated(), emulation.counting() as counts:
            rrm_ops.DenseEnergyLoss(gradient=gradient)(images, probs, rois, seg_label).backward()
        assert (counts.host_reads, counts.synchronizations) == (1, 0)
        assert counts.launches["slice_kernel"] == filters


def test_device_code_reads_device_values_only_through_to_host():
    """Code that runs for device tensors (all but the CPU launchers) neither reads device values
    behind common/device.h's back nor tests the device otherwise: such a read would be a host
    synchronisation the emulation cannot count, and such a test a branch it would not take."""
    forbidden = re.compile(r"\.item\s*[<(]|masked_select|nonzero|\.cpu\(\)|kCPU|is_cpu\(\)|is_cuda\(\)|\.tolist\(")
    offenders = []
    for path in sorted(CSRC.rglob("*")):
        if path.suffix not in (".h", ".cpp", ".cu", ".cuh") or path.name.endswith("_cpu.cpp"):
            continue
        if path.parent.name == "emulation" or path.parent.parent.name == "emulation" or path.name == "device.h":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if forbidden.search(line.split("//")[0]):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


# ---------------------------------------------------------------------------------------------
# Thread order


SEEDS = (1, 2, 3)


def _order_cases():
    images = photos(2, 37, 43)
    build_features = {kind: lattice_features(kind, images) for kind in ("bilateral_fine", "gaussian", "patches")}
    lattice = emu.lattice_build(build_features["bilateral_fine"], 1)
    crf = rrm_ops.crf_lattices(images)
    crf_tensors = crf.gaussian.tensors.as_tuple(), crf.bilateral.tensors.as_tuple()
    unary = -torch.log(scores(2, 21, 37, 43, seed=8)).flatten(2)
    cams = smooth_maps(2, 20, 37, 43, seed=9)
    q_low, q_high = scores(2, 21, 37, 43, seed=10).flatten(2), scores(2, 21, 37, 43, seed=11).flatten(2)
    cls_labels = torch.zeros(2, 20, dtype=torch.int64)
    cls_labels[0, [2, 7, 14]] = 1
    cls_labels[1, [0, 19]] = 1
    values = smooth_maps(2, 5, 37, 43, seed=12)
    return {
        **{f"lattice_build ({kind})": (lambda f=f: emu.lattice_build(f, 4)) for kind, f in build_features.items()},
        "lattice_filter": lambda: emu.lattice_filter(lattice, points(values), False),
        "lattice_filter (float64, reverse)": lambda: emu.lattice_filter(lattice, points(values).double(), True),
        "dense_crf_meanfield": lambda: emu.dense_crf_meanfield(unary, None, *crf_tensors, 3.0, 10.0, 5, None),
        "dense_crf": lambda: emu.dense_crf(scores(2, 3, 37, 43, seed=13), images, **{**DENSE_CRF, "n_iter": 5}),
        "prune_reliable_labels": lambda: emu.prune_reliable_labels(cams.flatten(2), q_low, q_high, 32.0, 0.6, 0.1,
                                                                   0.8, 0.8, 255, None),
        "reliable_region_labels": lambda: emu.reliable_region_labels(3 * cams, cls_labels, images, **MINING),
    }


@pytest.mark.parametrize("name", sorted(_order_cases()))
def test_results_do_not_depend_on_the_thread_order(name):
    """The determinism the CUDA code claims: gathered splats (no float atomics), the smallest
    entry of each lattice key elected its owner, exact integer counts. Fresh device allocations
    hold a different byte under every seed too, so no result depends on unwritten memory."""
    call = _order_cases()[name]
    in_index_order = call()
    for seed in SEEDS:
        emulation.set_thread_order(seed)
        assert_bitwise_equal(call(), in_index_order)
