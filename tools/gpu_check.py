"""The measuring parts of tools/gpu_check.sh, runnable on any device.

    python tools/gpu_check.py small-case --device cuda     # every op once on a tiny input
    python tools/gpu_check.py measure --device cuda --rows ROWS.tsv [--quick]
    python tools/gpu_check.py table ROWS.tsv               # print the rows as one table

``small-case`` calls every rrm_ops op (and the backward of the filter and of the energy loss)
once on two 24 x 20 images: the workload compute-sanitizer runs under. ``measure`` times, on
the device, the dense CRF (and pydensecrf on the CPU, per image, on the same input), the dense
energy loss forward + backward, reliable region mining and one joint training step of the
default setting and of the ResNet-38 setting (docs/training.md); each row holds the median
time per call and, on CUDA, the host synchronisations of one call (the synchronising
operations torch's sync debug mode reports: device-to-host copies and explicit waits). Rows
are appended to ROWS.tsv as ``what<TAB>result<TAB>time<TAB>host syncs``; gpu_check.sh adds its
own checks' rows and prints them all with ``table``. ``--quick`` uses small inputs, one round
and the default setting only (for tests of this script on the CPU).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
HEADER = ("what", "result", "time", "host syncs")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(call: Callable[[], Any], device: torch.device, rounds: int) -> float:
    """Median wall time of ``call`` over ``rounds`` calls after one warm-up call, each
    finished on the device before its clock stops."""
    call()
    synchronize(device)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def host_syncs(call: Callable[[], Any], device: torch.device) -> int | None:
    """The synchronising CUDA operations of one call of ``call`` (None off CUDA)."""
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchronizing" in str(warning.message) for warning in caught)


def _small_inputs(device: torch.device) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 24, 20, 3), dtype=torch.uint8, generator=generator)
    scores = torch.softmax(4 * torch.rand(2, 4, 24, 20, generator=generator), dim=1)
    cams = torch.rand(2, 3, 24, 20, generator=generator)
    cls_labels = torch.tensor([[1, 0, 1], [0, 1, 0]])
    seg_label = torch.randint(0, 4, (2, 1, 24, 20), generator=generator).float()
    values = {"images": images, "scores": scores, "cams": cams, "cls_labels": cls_labels, "seg_label": seg_label,
              "rois": torch.ones(2, 24, 20)}
    return {name: value.to(device) for name, value in values.items()}


def small_case(device: torch.device) -> None:
    """Every op, and the backward of the filter and of the energy loss, once on a tiny input."""
    import rrm_ops

    x = _small_inputs(device)
    lattice = rrm_ops.Lattice(rrm_ops.bilateral_features(x["images"], 10.0, 20.0))
    filtered_values = x["scores"].clone().requires_grad_()
    lattice.filter(filtered_values, normalize="symmetric").sum().backward()
    rrm_ops.dense_crf(x["scores"], x["images"], n_iter=3)
    mining = rrm_ops.reliable_region_labels(x["cams"], x["cls_labels"], x["images"].permute(0, 3, 1, 2))
    probs = x["scores"].clone().requires_grad_()
    rrm_ops.DenseEnergyLoss()(x["images"].permute(0, 3, 1, 2).float(), probs, x["rois"], x["seg_label"]).backward()
    synchronize(device)
    assert mining.shape == (2, 24, 20) and filtered_values.grad is not None and probs.grad is not None


def _benchmark_module(name: str):
    """A module of benchmarks/ (its inputs and baselines are the ones measured here)."""
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    return __import__(name)


def _op_rows(device: torch.device, quick: bool) -> list[tuple[str, Callable[[], Any]]]:
    import rrm_ops

    crf = _benchmark_module("test_bench_crf")
    energy = _benchmark_module("test_bench_energy_loss")
    mining = _benchmark_module("test_bench_mining")
    size, batch, labels = (41, 2, 3) if quick else (crf.SIZE, 4, 21)
    images = crf.photo_batch(size, batch)
    scores = crf.cam_like_scores(batch, labels, size)
    on_device = (scores.to(device), images.to(device))
    rows = [
        (f"dense CRF {batch} x {size}², L={labels}, {crf.N_ITER} it. ({device.type})",
         lambda: rrm_ops.dense_crf(*on_device, n_iter=crf.N_ITER)),
        ("  pydensecrf, same input, per image (cpu)",
         lambda: crf.pydensecrf_batch(scores.numpy(), images.numpy())),
    ]
    loss_inputs = [t.to(device) for t in energy.training_batch()]
    if quick:
        loss_inputs = [t[:1, :, :40, :40] if t.dim() == 4 else t[:1, :40, :40] for t in loss_inputs]
        loss_inputs[1] = loss_inputs[1].detach().requires_grad_()
    loss = energy.rrm_ops_loss()
    rows.append((f"dense energy loss fwd+bwd {' x '.join(map(str, loss_inputs[1].shape))} ({device.type})",
                 lambda: energy.forward_backward(loss, *loss_inputs)))
    mining_images, cams, cls_labels = mining._inputs()
    if quick:
        mining_images, cams = mining_images[:1, :40, :40], cams[:1, :, :40, :40]
        cls_labels = cls_labels[:1]
    mining_inputs = (torch.from_numpy(cams).to(device), torch.from_numpy(cls_labels).to(device),
                     mining_images.to(device))
    rows.append((f"reliable region mining {mining_inputs[0].shape[0]} x {mining_inputs[0].shape[-1]}² ({device.type})",
                 lambda: rrm_ops.reliable_region_labels(*mining_inputs)))
    return rows


# The flags of the training settings measured (docs/training.md): the default run (mining and
# the energy loss from the first step on) and RRM's ResNet-38 setting without its weights file.
TRAINING_SETTINGS = {
    "default": ["--cls-only-steps", "0"],
    "ResNet-38": ["--backbone", "resnet38", "--optimizer", "sgd", "--lr", "0.001", "--weight-decay", "5e-4",
                  "--batch-size", "4", "--crop-size", "321", "--cls-dropout", "0.5", "--cls-only-steps", "0",
                  "--cam-scales", "1,0.5,1.5,2"],
}
QUICK_TRAINING = ["--batch-size", "2", "--crop-size", "48", "--cam-scales", "1,0.5"]


def _training_step(flags: list[str], device: torch.device) -> Callable[[], Any]:
    """One joint training step (rrm.train's) of the setting ``flags`` on the device, with a
    fixed batch of the synthetic dataset."""
    from torch.utils.data import DataLoader

    from rrm.training.arguments import add_config_arguments, config_from_args
    from rrm.training.loop import build_run
    from rrm.training.runner import datasets
    from rrm.utils import distributed

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    config = config_from_args(parser.parse_args([*flags, "--device", str(device), "--num-workers", "0"]))
    ctx = distributed.Context(rank=0, world_size=1, device=device)
    train_set, _ = datasets(config, ctx)
    batch = next(iter(DataLoader(train_set, batch_sampler=[list(range(config.batch_size))])))
    run = build_run(config, ctx, Path(tempfile.mkdtemp(prefix="rrm-gpu-check-")))
    return lambda: run.stage.training_step(run.model, run.optimizer, batch, run.step, device)


def measure(device: torch.device, quick: bool) -> list[tuple[str, str, str, str]]:
    rounds = 1 if quick else 5
    rows = _op_rows(device, quick)
    for setting, flags in TRAINING_SETTINGS.items():
        if quick and setting != "default":
            continue
        rows.append((f"training step, {setting} setting ({device.type})",
                     _training_step(flags + (QUICK_TRAINING if quick else []), device)))
    measured = []
    for name, call in rows:
        on = torch.device("cpu") if name.endswith("(cpu)") else device
        seconds = median_seconds(call, on, rounds)
        syncs = host_syncs(call, on)
        measured.append((name, "measured", f"{1000 * seconds:.1f} ms", "-" if syncs is None else str(syncs)))
    return measured


def read_rows(path: Path) -> list[tuple[str, ...]]:
    return [tuple(line.split("\t")) for line in path.read_text().splitlines() if line.strip()]


def format_table(rows: list[tuple[str, ...]]) -> str:
    """Rows of (what, result, time, host syncs) as an aligned text table with a header."""
    table = [HEADER, *[tuple(row) + ("",) * (len(HEADER) - len(row)) for row in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/gpu_check.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    small = commands.add_parser("small-case", help="every op once on a tiny input")
    small.add_argument("--device", default="cuda")
    measured = commands.add_parser("measure", help="time the ops and training steps; append rows to ROWS")
    measured.add_argument("--device", default="cuda")
    measured.add_argument("--rows", type=Path, required=True)
    measured.add_argument("--quick", action="store_true", help="small inputs, one round, the default training setting only")
    table = commands.add_parser("table", help="print ROWS as one table")
    table.add_argument("rows", type=Path)
    args = parser.parse_args(argv)
    if args.command == "table":
        print(format_table(read_rows(args.rows)))
        return 0
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but CUDA is not available", file=sys.stderr)
        return 2
    if args.command == "small-case":
        small_case(device)
        print(f"small case ran on {device}")
        return 0
    rows = measure(device, args.quick)
    with args.rows.open("a") as out:
        out.writelines("\t".join(row) + "\n" for row in rows)
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
