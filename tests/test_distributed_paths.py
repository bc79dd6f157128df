"""The training layer's collectives, as a GPU run would issue them, checked without a GPU: a
recording stand-in for ``torch.distributed`` notes the device of every tensor a collective
gets, and the process group's backend must serve it (nccl serves CUDA tensors only)."""

from pathlib import Path

import pytest
import torch

from rrm.data import generate_synthetic_dataset
from rrm.train import main
from rrm.utils import distributed

TINY = ["--max-steps", "3", "--batch-size", "2", "--crop-size", "48", "--cls-only-steps", "1",
        "--num-workers", "0", "--val-every", "2", "--log-every", "1", "--cam-scales", "1,0.5",
        "--panel-images", "1", "--crf-val-scales", "1"]


class RecordingDistributed:
    """One process of a group: collectives leave tensors as they are and are recorded."""

    class ReduceOp:
        SUM = "sum"

    def __init__(self) -> None:
        self.backend: str | None = None
        self.calls: list[tuple[str, str]] = []

    def is_available(self) -> bool:
        return True

    def is_initialized(self) -> bool:
        return self.backend is not None

    def init_process_group(self, backend: str) -> None:
        self.backend = backend

    def destroy_process_group(self) -> None:
        self.backend = None

    def all_reduce(self, tensor: torch.Tensor, op=None) -> None:
        self.calls.append(("all_reduce", tensor.device.type))

    def broadcast(self, tensor: torch.Tensor, src: int) -> None:
        self.calls.append(("broadcast", tensor.device.type))

    def barrier(self) -> None:
        self.calls.append(("barrier", "cpu"))


@pytest.fixture
def recording(monkeypatch) -> RecordingDistributed:
    fake = RecordingDistributed()
    monkeypatch.setattr(distributed, "dist", fake)
    return fake


def test_served_device_types():
    assert distributed.served_device_types("nccl") == {"cuda"}
    assert distributed.served_device_types("gloo") == {"cpu", "cuda"}
    assert distributed.served_device_types("cpu:gloo,cuda:nccl") == {"cpu", "cuda"}


def test_a_gpu_process_joins_a_group_that_serves_cpu_and_cuda_tensors(recording, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(distributed, "resolve_device", lambda name, local_rank: torch.device("cuda", local_rank))
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(distributed, "_collective_device", torch.device("cpu"))  # restored after the test
    ctx = distributed.setup("cuda")
    assert ctx.device == torch.device("cuda", 1) and ctx.rank == 1
    assert distributed.served_device_types(recording.backend) == {"cpu", "cuda"}
    assert distributed._collective_device == torch.device("cuda", 1)


def test_every_collective_of_a_run_gets_a_tensor_its_backend_serves(recording, monkeypatch, tmp_path: Path):
    """A run in a group set up as on GPUs (the backend a CUDA process picks): the stop check
    at every step, validation, label quality, checkpoints and the final sync check."""
    data = generate_synthetic_dataset(tmp_path / "voc", n_train=4, n_val=2, size=48, seed=5)
    monkeypatch.setattr(distributed, "setup", lambda device: _joined(recording))
    assert main(["--data-root", str(data), "--out", str(tmp_path / "run"), *TINY]) == 0
    served = distributed.served_device_types(distributed.BACKENDS["cuda"])
    collectives = [call for call in recording.calls if call[0] != "barrier"]
    assert len(collectives) >= 3 + 2  # a stop check per step, then the validations' reductions
    assert all(device in served for _, device in collectives), collectives
    # Old behaviour for comparison: a plain nccl group does not serve the step's stop check.
    assert not all(device in distributed.served_device_types("nccl") for _, device in collectives)


def _joined(fake: RecordingDistributed) -> distributed.Context:
    fake.init_process_group(distributed.BACKENDS["cuda"])
    return distributed.Context(rank=0, world_size=1, device=torch.device("cpu"))


def test_the_stop_check_reduces_on_the_cpu_and_reductions_on_the_process_device(recording, monkeypatch):
    recording.init_process_group(distributed.BACKENDS["cuda"])
    assert distributed.any_process(False) is False
    assert recording.calls == [("all_reduce", "cpu")]
    monkeypatch.setattr(distributed, "_collective_device", torch.device("meta"))
    recording.calls.clear()
    with pytest.raises(NotImplementedError):  # a meta result cannot come back: the reduction ran there
        distributed.all_reduce_sum(torch.ones(2))
    assert recording.calls == [("all_reduce", "meta")]
