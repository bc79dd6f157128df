"""The CPU ops on a busy machine: each op timed next to 0, 1, 2 and 3 competing busy processes.

A competing process is a Python loop that keeps one core busy (what a data-loading worker, a
second job or a neighbour on a shared node does). The processes of one level start before its
benchmarks and are killed after them, also when a benchmark fails or the run is interrupted;
each also exits by itself after BUSY_SECONDS or as soon as this process is gone.

Every op is compared with baselines timed at the same level in the same run: pydensecrf
(single-threaded C++) on the same CRF problems, and torch.softmax over [32, 512, 512] float32 as
an example of PyTorch's own multi-threaded operators. The median of ROUNDS calls is the figure
of interest here: under contention single calls vary a lot.

Run: python -m pytest benchmarks/test_bench_contention.py --benchmark-only
Table: python tools/contention_table.py run.json
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
import torch

import rrm_ops
from conftest import photo_batch
from test_bench_crf import cam_like_scores, pydensecrf_batch
from test_bench_energy_loss import forward_backward, rrm_ops_loss, training_batch
from test_bench_mining import _inputs as mining_inputs
from test_bench_mining import _ours as mining

COMPETING = [0, 1, 2, 3]
THREADS = [2, 1]
ROUNDS = 5
N_ITER = rrm_ops.TRAINING_CRF.n_iter
# No level runs this long; the bound only matters if this process cannot kill its children.
BUSY_SECONDS = 900

# Spins until the deadline passes or its parent is gone (checked every 10^5 iterations).
BUSY_LOOP = """
import os, sys, time
parent, deadline = os.getppid(), time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline and os.getppid() == parent:
    for _ in range(100000):
        pass
"""


@contextlib.contextmanager
def competing_processes(count: int, seconds: float = BUSY_SECONDS) -> Iterator[list[subprocess.Popen]]:
    """`count` busy processes for the duration of the block (at most `seconds`)."""
    processes: list[subprocess.Popen] = []
    try:
        for _ in range(count):
            processes.append(subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(seconds)]))
        yield processes
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            process.wait()


@pytest.fixture(scope="module", params=COMPETING, ids=lambda n: f"{n}_competing")
def competing(request) -> Iterator[list[subprocess.Popen]]:
    with competing_processes(request.param) as processes:
        yield processes


def crf_case(size: int, labels: int) -> Callable[[], Callable[[], object]]:
    def make() -> Callable[[], object]:
        images, scores = photo_batch(size), cam_like_scores(1, labels, size)
        return lambda: rrm_ops.dense_crf(scores, images, n_iter=N_ITER)

    return make


def on_threads(threads: int, make: Callable[[], Callable[[], object]]) -> Callable[[], Callable[[], object]]:
    """`make`'s call run with torch's intra-op thread count set to `threads`."""

    def make_on_threads() -> Callable[[], object]:
        run = make()

        def run_on_threads() -> object:
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                return run()
            finally:
                torch.set_num_threads(previous)

        return run_on_threads

    return make_on_threads


def pydensecrf_case(size: int, labels: int) -> Callable[[], Callable[[], object]]:
    def make() -> Callable[[], object]:
        images, scores = photo_batch(size).numpy(), cam_like_scores(1, labels, size).numpy()
        return lambda: pydensecrf_batch(scores, images)

    return make


def mining_case() -> Callable[[], object]:
    images, cams, labels = mining_inputs()
    return lambda: mining(images, cams, labels)


def energy_loss_case() -> Callable[[], object]:
    loss, batch = rrm_ops_loss(), training_batch()
    return lambda: forward_backward(loss, *batch)


def softmax_case() -> Callable[[], object]:
    values = torch.randn(32, 512, 512, generator=torch.Generator().manual_seed(0))
    return lambda: torch.softmax(values, dim=-1)


# PyTorch-threaded cases, each timed at 2 threads and at 1.
THREADED: dict[str, Callable[[], Callable[[], object]]] = {
    **{f"dense_crf_{size}_L{labels}": crf_case(size, labels) for size in (161, 321) for labels in (3, 21)},
    "reliable_region_labels_4x321": mining_case,
    "dense_energy_loss_4x321_K21": energy_loss_case,
    "torch_softmax_32x512x512": softmax_case,
}
CASES: dict[str, Callable[[], Callable[[], object]]] = {
    **{f"{name}_{threads}_threads": on_threads(threads, make) for name, make in THREADED.items() for threads in THREADS},
    **{f"pydensecrf_{size}_L{labels}": pydensecrf_case(size, labels) for size in (161, 321) for labels in (3, 21)},
}


@pytest.mark.parametrize("case", list(CASES))
def test_under_load(benchmark, competing, case):
    level = len(competing)
    benchmark.group = f"{case} next to busy processes"
    run = CASES[case]()
    benchmark.extra_info.update(
        competing=level, loadavg_before=os.getloadavg()[0], case=case
    )
    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1)
    assert all(process.poll() is None for process in competing), "a competing process ended during the timing"
    benchmark.extra_info["loadavg_after"] = os.getloadavg()[0]


def test_competing_processes_are_gone_after_an_interrupt():
    """The block kills its processes whatever ends it (here a KeyboardInterrupt)."""
    with pytest.raises(KeyboardInterrupt), competing_processes(2) as processes:
        assert all(process.poll() is None for process in processes)
        raise KeyboardInterrupt
    assert all(process.returncode is not None for process in processes)
