"""``curves.png`` of a run: its losses, learning rate, validation mIoU and, for one-step RRM,
the precision and coverage of the reliable labels, over the steps, from ``metrics.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path

from rrm.utils.files import write_atomic

# (title, y label, prefix or names of the record keys drawn in the plot).
PLOTS = (
    ("training losses", "loss (mean since the previous line)", "loss/"),
    ("learning rate", "lr", ("lr",)),
    ("validation mIoU", "mIoU", ("val/cam_miou", "val/seg_miou", "final/cam_miou", "final/seg_miou",
                                  "final/seg_crf_miou")),
    ("reliable labels on the train masks", "fraction", ("val/reliable_precision", "val/reliable_coverage",
                                                        "val/cam_train_precision", "final/reliable_precision",
                                                        "final/reliable_coverage", "final/cam_train_precision")),
)


def read_records(path: Path) -> list[dict]:
    """The records of a ``metrics.jsonl``; a resumed run's repeated steps keep the last."""
    by_step: dict[tuple[int, tuple[str, ...]], dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            by_step[(record["step"], tuple(sorted(record)))] = record
    return sorted(by_step.values(), key=lambda record: record["step"])


def _series(records: list[dict], keys) -> dict[str, tuple[list[int], list[float]]]:
    names = sorted({key for record in records for key in record if key.startswith(keys)}) \
        if isinstance(keys, str) else list(keys)
    series = {}
    for name in names:
        points = [(r["step"], r[name]) for r in records if isinstance(r.get(name), (int, float))]
        if points:
            series[name] = ([step for step, _ in points], [value for _, value in points])
    return series


def draw_curves(records: list[dict], path: Path) -> None:
    """Write the plots of :data:`PLOTS` from ``records`` to ``path`` (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    for axis, (title, ylabel, keys) in zip(axes.flat, PLOTS):
        series = _series(records, keys)
        for name, (steps, values) in series.items():
            final = name.startswith("final/")
            axis.plot(steps, values, marker="*" if final else ("o" if len(steps) < 30 else None),
                      linestyle="none" if final else "-", markersize=9 if final else 4, label=name)
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
        if series:
            axis.legend(fontsize=7)
        else:
            axis.text(0.5, 0.5, "nothing recorded yet", ha="center", va="center", transform=axis.transAxes)
    write_atomic(path, lambda temporary: figure.savefig(temporary, dpi=90))
    pyplot.close(figure)
