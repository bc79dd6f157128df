"""Every op of the rrm_ops library runs on the CPU, has a fake kernel, and goes through
torch.library.opcheck in one of the tests."""

import re
from pathlib import Path

import torch

import rrm_ops  # noqa: F401  (registers the ops)

TESTS = Path(__file__).resolve().parent


def registered_ops() -> set[str]:
    return {name.split("::")[1] for name in torch._C._dispatch_get_all_op_names() if name.startswith("rrm_ops::")}


def test_every_op_runs_on_the_cpu_and_on_fake_tensors():
    assert len(registered_ops()) == 6
    for op in registered_ops():
        assert torch._C._dispatch_has_computed_kernel_for_dispatch_key(f"rrm_ops::{op}", "CPU"), op
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"rrm_ops::{op}", "Meta"), op


def test_every_op_passes_opcheck_in_a_test():
    checked = set()
    for path in TESTS.glob("test_*.py"):
        checked |= set(re.findall(r"opcheck\(\s*torch\.ops\.rrm_ops\.(\w+)", path.read_text()))
    assert checked == registered_ops()
