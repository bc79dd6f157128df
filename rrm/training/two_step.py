"""Two-step RRM in one run folder: ``python -m rrm.train --two-step [one-step options]``.

1. ``OUT/one_step``: one-step RRM with the given options (the defaults: the embedded dataset).
2. ``OUT/pseudo_labels``: pseudo labels of the train list from the final one-step model
   (the scales of ``--crf-val-scales``, flip and dense CRF: the inference protocol of the
   one-step ``seg_crf_miou``), scored against the train masks.
3. ``OUT/fcn``: step 2, stage fcn (its defaults; ``--fcn-max-steps`` to change its length)
   on those pseudo labels, sharing the data, batch, crop, device and seed options.

``OUT/metrics.json`` holds the one-step keys (``cam_miou``, ``reliable_precision``,
``reliable_coverage``, ``seg_miou``, ``seg_crf_miou``, ...) and ``pseudo_label_miou``,
``two_step_miou``, ``two_step_crf_miou``,
the stages' wall times and ``wall_time_s``, their sum. Rerunning with the same ``--out``
resumes: finished stages (those with a ``metrics.json``) are skipped, an interrupted
training resumes from its ``last.pth`` and the export redoes only missing PNGs.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rrm.evaluation.prediction import DEFAULT_IGNORE_BELOW, PredictionOptions
from rrm.evaluation.prediction_files import export_pseudo_labels
from rrm.evaluation.scoring import evaluate_split
from rrm.training.arguments import config_from_args
from rrm.models.weights import load_checkpoint
from rrm.training.config import TrainConfig
from rrm.training.loop import CHECKPOINT_NAME
from rrm.training.runner import data_root, run_folder, run_training
from rrm.training.stages import FCNStage, RRMStage
from rrm.utils import distributed
from rrm.utils.errors import ConfigError, DatasetError
from rrm.utils.files import strict_json

EXPORT_BATCH_SIZE = 8
# Options step 2 takes from the one-step run; the others are stage fcn's defaults.
SHARED_OPTIONS = ("data_root", "train_list", "val_list", "batch_size", "crop_size", "device", "seed",
                  "num_workers", "log_every", "panel_images")
STAGE_FOLDERS = ("one_step", "pseudo_labels", "fcn")
# Rows of the summary table: (metrics.json key, label); values are fractions shown in percent.
TABLE_ROWS = (
    ("cam_miou", "CAM mIoU (val)"),
    ("reliable_precision", "reliable-label precision (train)"),
    ("reliable_coverage", "reliable-label coverage (train)"),
    ("seg_miou", "one-step mIoU (val)"),
    ("seg_crf_miou", "one-step mIoU, scales + flip + CRF (val)"),
    ("pseudo_label_miou", "pseudo-label mIoU (train masks)"),
    ("two_step_miou", "two-step mIoU (val)"),
    ("two_step_crf_miou", "two-step mIoU, scales + flip + CRF (val)"),
)


def fcn_config(one_step: TrainConfig, out: Path, pseudo_labels: Path, max_steps: int | None) -> TrainConfig:
    """Step 2's config: stage fcn defaults, :data:`SHARED_OPTIONS` of the one-step config."""
    values: dict[str, Any] = {name: getattr(one_step, name) for name in SHARED_OPTIONS}
    values.update(stage=FCNStage.name, pseudo_labels=str(pseudo_labels), out=str(out), max_steps=max_steps)
    return config_from_args(argparse.Namespace(config=None, **values))


def train_stage(config: TrainConfig, ctx: distributed.Context) -> dict[str, float]:
    """The final metrics of the training in ``config.out``: read from its ``metrics.json``
    when finished, else trained (resumed from its ``last.pth`` when there is one)."""
    out = Path(config.out)
    if (out / "metrics.json").is_file():
        if ctx.is_main:
            print(f"{out}: finished earlier, skipped", flush=True)
        return json.loads((out / "metrics.json").read_text())
    checkpoint = None
    if (out / CHECKPOINT_NAME).is_file():
        checkpoint = load_checkpoint(out / CHECKPOINT_NAME, stage=config.stage)
        config = replace(config, resume=str(out / CHECKPOINT_NAME))
    return run_training(config, checkpoint, ctx)


def pseudo_label_miou(pseudo_labels: Path, root: Path, split: str) -> float:
    """mIoU of the pseudo labels against the split's ground-truth masks (255 in the pseudo
    labels counts as a miss; see :mod:`rrm.evaluation.scoring`); NaN when the split has no masks."""
    try:
        return evaluate_split(pseudo_labels, root, split).miou
    except DatasetError as error:
        print(f"pseudo-label mIoU not measured: {error}", flush=True)
        return float("nan")


def two_step_metrics(one_step: dict[str, float], pseudo_miou: float, fcn: dict[str, float],
                     export_time_s: float) -> dict[str, float]:
    """The run folder's ``metrics.json``: the one-step keys, ``pseudo_label_miou``,
    ``two_step_miou`` and ``two_step_crf_miou`` (step 2's ``seg_miou`` and ``seg_crf_miou``),
    each stage's wall time and their sum."""
    return {
        **one_step,
        "pseudo_label_miou": pseudo_miou,
        "two_step_miou": fcn["seg_miou"],
        "two_step_crf_miou": fcn["seg_crf_miou"],
        "one_step_wall_time_s": one_step["wall_time_s"],
        "pseudo_labels_wall_time_s": export_time_s,
        "fcn_wall_time_s": fcn["wall_time_s"],
        "fcn_steps": fcn["steps"],
        "wall_time_s": one_step["wall_time_s"] + export_time_s + fcn["wall_time_s"],
    }


def summary_table(metrics: dict[str, float]) -> str:
    """The rows of :data:`TABLE_ROWS` in percent, and the wall time."""
    width = max(len(label) for _, label in TABLE_ROWS)
    lines = [f"{'two-step RRM':<{width}}  value (%)"]
    for key, label in TABLE_ROWS:
        value = metrics.get(key)
        lines.append(f"{label:<{width}}  {'-' if value is None or math.isnan(value) else f'{100 * value:9.2f}'}")
    lines.append(f"{'wall time (s)':<{width}}  {metrics['wall_time_s']:9.0f}")
    return "\n".join(lines)


def _check_options(one_step_config: TrainConfig, args: argparse.Namespace) -> None:
    """:class:`ConfigError` for the options ``--two-step`` cannot run with."""
    if one_step_config.stage != RRMStage.name:
        raise ConfigError("--two-step trains stage rrm first; leave --stage out")
    if one_step_config.resume:
        raise ConfigError("--two-step resumes from its run folder: rerun with the same --out instead of --resume")
    if args.stop_at is not None:
        raise ConfigError("--stop-at is not supported with --two-step; interrupt it and rerun with the same --out")
    if args.fcn_max_steps is not None and args.fcn_max_steps < 1:
        raise ConfigError(f"--fcn-max-steps must be > 0, got {args.fcn_max_steps}")


def run_two_step(args: argparse.Namespace) -> int:
    """``python -m rrm.train --two-step``: see the module docstring."""
    one_step_config = config_from_args(args)
    _check_options(one_step_config, args)
    ctx = distributed.setup(one_step_config.device)
    if ctx.distributed and not one_step_config.out:
        raise ConfigError("--two-step under torchrun needs --out (the processes must share one run folder)")
    out = run_folder(one_step_config)
    folders = {stage: out / stage for stage in STAGE_FOLDERS}
    one_step = train_stage(replace(one_step_config, out=str(folders["one_step"])), ctx)

    root = data_root(one_step_config, ctx)
    started = time.perf_counter()
    export = PredictionOptions(scales=one_step_config.crf_val_scales, flip=True, crf=True,
                               ignore_below=DEFAULT_IGNORE_BELOW)
    export_pseudo_labels(folders["one_step"] / CHECKPOINT_NAME, root, one_step_config.train_list,
                         folders["pseudo_labels"], export, EXPORT_BATCH_SIZE, ctx.device, ctx.rank, ctx.world_size)
    distributed.barrier()
    export_time_s = time.perf_counter() - started
    pseudo_miou = pseudo_label_miou(folders["pseudo_labels"], root, one_step_config.train_list)

    fcn = train_stage(fcn_config(one_step_config, folders["fcn"], folders["pseudo_labels"], args.fcn_max_steps), ctx)
    metrics = two_step_metrics(one_step, pseudo_miou, fcn, export_time_s)
    if ctx.is_main:
        (out / "metrics.json").write_text(strict_json(metrics, indent=2) + "\n")
        print(summary_table(metrics))
        print(f"run folder: {out}", flush=True)
    return 0
