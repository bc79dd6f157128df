"""Score predicted masks against the ground truth of a split.

    python -m rrm.evaluate --pred O --data-root D [--split val] [--json out.json]

``O/<name>.png`` must exist for every image of the split, at the size of its ground-truth
mask (``SegmentationClass``, else ``SegmentationClassAug``). Predictions may be palette,
grey-level or VOC-coloured RGB PNGs holding 0..20 (``rrm.infer`` writes palette PNGs).

Pixels whose ground truth is 255 (VOC's boundary/void band) are not counted. A prediction of
255 on a counted pixel (pseudo labels mark unreliable pixels so) counts as a miss for the
ground-truth class and as a hit for no class; the report says how many such pixels there were.

Prints per-class IoU (VOC class names), mIoU (mean over classes present in the ground truth
or the predictions), pixel accuracy and mean class accuracy, in percent; ``--json`` also
writes them as fractions (absent classes: null). Problems (missing predictions, size
mismatches, bad values) end the run with one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from rrm.data import IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES, DatasetError, read_mask
from rrm.data.layout import MASK_DIRS
from rrm.evaluation.metrics import ConfusionMatrix
from rrm.evaluation.prediction import CommandError, split_names, write_atomic

CLASS_NAMES: tuple[str, ...] = ("background", *VOC_CLASSES)
SHOWN_MISSING = 5  # missing files named in the error message


@dataclass
class EvaluationReport:
    """Scores of a split. ``iou``: per class of :data:`CLASS_NAMES`, NaN for classes in
    neither the ground truth nor the predictions; ``miou`` their mean over the others;
    ``ignored_predictions``: counted pixels predicted as 255."""

    iou: list[float]
    miou: float
    pixel_accuracy: float
    mean_accuracy: float
    num_images: int
    ignored_predictions: int

    def to_json(self) -> dict:
        """JSON-ready dict of fractions; NaN becomes null."""
        def clean(value: float) -> float | None:
            return None if math.isnan(value) else value

        return {
            "miou": clean(self.miou),
            "pixel_accuracy": clean(self.pixel_accuracy),
            "mean_accuracy": clean(self.mean_accuracy),
            "iou": {name: clean(value) for name, value in zip(CLASS_NAMES, self.iou)},
            "num_images": self.num_images,
            "ignored_predictions": self.ignored_predictions,
        }

    def table(self) -> str:
        """Per-class IoU and the summary scores, in percent."""
        def percent(value: float) -> str:
            return "-" if math.isnan(value) else f"{100 * value:6.2f}"

        width = max(len(name) for name in (*CLASS_NAMES, "pixel accuracy"))
        lines = [f"{'class':<{width}}  IoU (%)"]
        lines += [f"{name:<{width}}  {percent(value)}" for name, value in zip(CLASS_NAMES, self.iou)]
        lines += [
            f"{'mIoU':<{width}}  {percent(self.miou)}",
            f"{'pixel accuracy':<{width}}  {percent(self.pixel_accuracy)}",
            f"{'mean accuracy':<{width}}  {percent(self.mean_accuracy)}",
            f"{self.num_images} images",
        ]
        if self.ignored_predictions:
            lines.append(f"{self.ignored_predictions} counted pixels predicted as {IGNORE_INDEX} (scored as misses)")
        return "\n".join(lines)


def ground_truth_paths(root: Path, names: Sequence[str]) -> list[Path]:
    """The ground-truth mask of each image (``SegmentationClass`` first); raises
    :class:`DatasetError` naming the first images without one and their count."""
    paths, missing = [], []
    for name in names:
        candidates = (root / folder / f"{name}.png" for folder in MASK_DIRS)
        found = next((path for path in candidates if path.is_file()), None)
        if found is None:
            missing.append(name)
        paths.append(found)
    if missing:
        folders = " or ".join(str(root / folder) for folder in MASK_DIRS)
        raise DatasetError(f"no ground-truth mask in {folders} for {len(missing)} of {len(names)} images "
                           f"({_first(missing)})")
    return paths


def prediction_paths(pred_dir: Path, names: Sequence[str]) -> list[Path]:
    """``pred_dir/<name>.png`` for each image; raises :class:`CommandError` naming the first
    missing files and their count."""
    if not pred_dir.is_dir():
        raise CommandError(f"prediction folder not found: {pred_dir}")
    paths = [pred_dir / f"{name}.png" for name in names]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise CommandError(f"{len(missing)} of {len(names)} predictions missing from {pred_dir} ({_first(missing)})")
    return paths


def _first(items: Sequence[str]) -> str:
    shown = ", ".join(items[:SHOWN_MISSING])
    return f"first: {shown}{' ...' if len(items) > SHOWN_MISSING else ''}"


def evaluate_files(pred_paths: Sequence[Path], truth_paths: Sequence[Path]) -> EvaluationReport:
    """Score predictions against ground-truth masks (pairs of files of the same size)."""
    # One extra prediction column collects predicted 255s: they add to their ground-truth
    # class's row (a miss) but to no class's column.
    void_label = NUM_CLASSES + 1
    confusion = ConfusionMatrix(void_label + 1, ignore_index=IGNORE_INDEX)
    for pred_path, truth_path in zip(pred_paths, truth_paths):
        truth = read_mask(truth_path)
        prediction = read_mask(pred_path)
        if prediction.shape != truth.shape:
            raise CommandError(
                f"prediction {pred_path} is {_size(prediction)} but ground truth {truth_path} is {_size(truth)}"
            )
        prediction_t = torch.from_numpy(prediction).long()
        prediction_t[prediction_t == IGNORE_INDEX] = void_label
        confusion.update(prediction_t, torch.from_numpy(truth).long())
    scores = confusion.compute()
    iou = scores.iou[:void_label]
    return EvaluationReport(
        iou=iou.tolist(),
        miou=float(iou.nanmean()) if not iou.isnan().all() else float("nan"),
        pixel_accuracy=scores.pixel_accuracy,
        mean_accuracy=scores.mean_accuracy,
        num_images=len(pred_paths),
        ignored_predictions=int(confusion.reduced_matrix()[:, void_label].sum()),
    )


def _size(mask) -> str:
    return f"{mask.shape[1]}x{mask.shape[0]}"


def evaluate_split(pred_dir: str | Path, data_root: str | Path, split: str = "val") -> EvaluationReport:
    """Score ``pred_dir/<name>.png`` for every image of ``split`` of ``data_root``."""
    names = split_names(data_root, split)
    truth_paths = ground_truth_paths(Path(data_root), names)
    return evaluate_files(prediction_paths(Path(pred_dir), names), truth_paths)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rrm.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred", required=True, help="folder of predicted masks <name>.png")
    parser.add_argument("--data-root", required=True, help="VOC-layout folder with the ground-truth masks")
    parser.add_argument("--split", default="val", help="image list name or list file path (default: val)")
    parser.add_argument("--json", default=None, help="also write the scores to this JSON file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = evaluate_split(args.pred, args.data_root, args.split)
        if args.json:
            text = json.dumps({"pred": str(args.pred), "split": args.split, **report.to_json()}, indent=2)
            write_atomic(Path(args.json), lambda path: path.write_text(text + "\n"))
    except (CommandError, DatasetError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
