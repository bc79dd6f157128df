"""Progress line (loss parts, images/s, ETA), JSON-lines metrics log (``metrics.jsonl``,
strict JSON: ``null`` where a value is undefined), ``curves.png`` and, when the
``tensorboard`` package is installed, TensorBoard event files in ``tensorboard/``."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch

from rrm.training.curves import draw_curves, read_records
from rrm.utils.files import strict_json


CURVES_NAME = "curves.png"


def format_metric(value: object) -> str:
    """A metric for the terminal: fractions with 4 decimals, ``n/a`` where nothing was counted."""
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else "n/a"
    return str(value)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class ProgressLog:
    """Prints a progress line every ``log_every`` steps and appends records to ``path``.

    Only the process with ``enabled=True`` (rank 0) prints or writes. Loss tensors are
    averaged on their device and read back only when a line is printed.
    """

    def __init__(self, path: Path, total_steps: int, start_step: int, enabled: bool, log_every: int = 20) -> None:
        self.path, self.total_steps, self.enabled, self.log_every = path, total_steps, enabled, log_every
        self.start_time = time.perf_counter()
        self.window_start, self.window_step, self.images = self.start_time, start_step, 0
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0
        self.tensorboard = _tensorboard_writer(path.parent) if enabled else None

    def elapsed(self) -> float:
        return time.perf_counter() - self.start_time

    def step(self, step: int, losses: dict[str, torch.Tensor], images: int, lr: float) -> None:
        for name, value in losses.items():
            self.sums[name] = self.sums.get(name, 0) + value
        self.count += 1
        self.images += images
        if step % self.log_every == 0 or step == self.total_steps:
            self._flush(step, lr)

    def _flush(self, step: int, lr: float) -> None:
        now = time.perf_counter()
        rate = self.images / max(now - self.window_start, 1e-9)
        steps_per_s = (step - self.window_step) / max(now - self.window_start, 1e-9)
        eta = (self.total_steps - step) / steps_per_s if steps_per_s > 0 else float("inf")
        means = {name: float(total) / self.count for name, total in self.sums.items()}
        parts = " ".join(f"{name} {value:.4f}" for name, value in means.items() if name != "total")
        self.message(f"step {step}/{self.total_steps} [{100 * step / self.total_steps:3.0f}%] "
                     f"loss {means.get('total', float('nan')):.4f} ({parts}) {rate:.1f} img/s ETA {_duration(eta)}")
        self.record(step, {**{f"loss/{k}": v for k, v in means.items()}, "lr": lr, "images_per_s": rate})
        self.sums, self.count, self.images = {}, 0, 0
        self.window_start, self.window_step = now, step

    def record(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as stream:
            stream.write(strict_json({"step": step, "time_s": round(self.elapsed(), 3), **values}) + "\n")
        if self.tensorboard is not None:
            for name, value in values.items():
                self.tensorboard.add_scalar(name, value, step)
            self.tensorboard.flush()

    def draw_curves(self) -> None:
        """Redraw ``curves.png`` beside the log from every record so far."""
        if self.enabled and self.path.is_file():
            draw_curves(read_records(self.path), self.path.with_name(CURVES_NAME))

    def message(self, text: str) -> None:
        if self.enabled:
            print(text, file=sys.stdout, flush=True)


def _tensorboard_writer(folder: Path):
    """A SummaryWriter when the tensorboard package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(folder / "tensorboard"))
