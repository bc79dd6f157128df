"""RRM training: ``python -m rrm.train [options]`` (``torchrun`` for several processes).

With no options it trains one-step RRM with the small backbone on the embedded synthetic
dataset on the CPU. Each step: multi-scale CAMs -> reliable region labels (two dense CRFs +
pruning, batched, on the training device) -> multilabel soft-margin + reliable-region
cross-entropy + dense energy loss -> SGD with RRM's four-group poly schedule.

``--stage fcn --pseudo-labels P`` trains step 2 instead: DeepLab with cross-entropy on the
pseudo masks in P (see rrm.training.stages). ``--two-step`` runs one-step RRM, the pseudo-label
export and step 2 in one run folder (see rrm.training.two_step).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

import rrm_ops
from rrm.utils import distributed
from rrm.training.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, save_atomic
from rrm.training.config import ConfigError, TrainConfig, add_config_arguments, config_from_args, save_yaml
from rrm.data import DatasetError, EvalTransform, TrainTransform, VOCSegmentation, ensure_synthetic_dataset
from rrm.evaluation.validation import LabelQuality, cam_argmax_labels, validate, validate_segmentation, validate_with_crf
from rrm.training.losses import reliable_region_cross_entropy
from rrm.cams import mine_reliable_labels, upsampled_cams
from rrm.models import build_rrm, load_state_dict_file
from rrm.evaluation.prediction import CommandError
from rrm.training.progress import ProgressLog
from rrm.training.stages import build_fcn_network, fcn_training_step


class StepBatches:
    """The batches of every step, fixed by the seed: step s belongs to epoch
    s // steps_per_epoch, whose permutation is drawn from (seed, epoch). A resumed run
    therefore sees exactly the batches an uninterrupted one would."""

    def __init__(self, size: int, batch_size: int, world_size: int, rank: int, seed: int) -> None:
        self.size, self.batch_size, self.world_size, self.rank, self.seed = size, batch_size, world_size, rank, seed
        self.steps_per_epoch = size // (batch_size * world_size)
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"the training list has {size} images, fewer than batch_size x processes = {batch_size * world_size}"
            )

    def of_epoch(self, epoch: int, first_step: int = 0) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.size, generator=generator)
        used = order[: self.steps_per_epoch * self.batch_size * self.world_size]
        steps = used.view(self.steps_per_epoch, self.world_size, self.batch_size)
        return steps[first_step:, self.rank].tolist()


@dataclass
class Run:
    """The state a training run carries from step to step."""

    config: TrainConfig
    ctx: distributed.Context
    model: torch.nn.Module  # DDP-wrapped when distributed
    core: torch.nn.Module  # the RRMNet (stage fcn: the DeepLabV2) itself
    optimizer: torch.optim.Optimizer
    energy_loss: torch.nn.Module | None  # stage rrm only
    out: Path
    step: int = 0
    stop_signal: int = 0


def poly_learning_rate(optimizer: torch.optim.Optimizer, step: int, max_steps: int, power: float) -> None:
    """RRM's poly schedule: each group's lr = its initial lr x (1 - step / max_steps)^power."""
    factor = (1 - step / max_steps) ** power
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor


def training_step(run: Run, batch: dict, quality: dict[str, LabelQuality]) -> dict[str, torch.Tensor]:
    """One optimisation step of the run's stage; returns the loss parts (detached, on the device)."""
    if run.config.stage == "fcn":
        return fcn_training_step(run.model, run.optimizer, batch, run.ctx.device)
    return rrm_training_step(run, batch, quality)


def rrm_training_step(run: Run, batch: dict, quality: dict[str, LabelQuality]) -> dict[str, torch.Tensor]:
    """One one-step RRM optimisation step; returns the loss parts (detached, on the device)."""
    config, device = run.config, run.ctx.device
    images = batch["image"].to(device, non_blocking=True)
    images_uint8 = batch["image_uint8"].to(device, non_blocking=True)
    rois = batch["roi"].to(device, non_blocking=True)
    cls_labels = batch["label"].to(device, non_blocking=True)
    cls_only = run.step < config.cls_only_steps
    # The extra CAM scales only feed the mining, which the classification-only phase skips.
    out = run.model(images, cam_scales=None if cls_only else config.cam_scales)
    losses = {"cls": F.multilabel_soft_margin_loss(out["cls_logits"], cls_labels)}
    seg_logits = F.interpolate(out["seg_logits"], size=images.shape[-2:], mode="bilinear", align_corners=False)
    if cls_only:
        # Keeps every parameter in the graph, as DistributedDataParallel requires.
        total = losses["cls"] + 0.0 * seg_logits.sum()
    else:
        reliable = mine_reliable_labels(out["cams"], cls_labels, images_uint8, rois, **config.mining_kwargs())
        losses["seg_bg"], losses["seg_fg"] = reliable_region_cross_entropy(seg_logits, reliable)
        probs = torch.softmax(seg_logits, dim=1)
        losses["dense"] = run.energy_loss(images_uint8.float(), probs, rois, reliable.unsqueeze(1))
        total = sum(losses.values())
        _measure_label_quality(batch, out["cams"], cls_labels, reliable, rois, quality, config)
    run.optimizer.zero_grad(set_to_none=True)
    total.backward()
    run.optimizer.step()
    losses["total"] = total
    return {name: value.detach() for name, value in losses.items()}


def _measure_label_quality(batch, cams, cls_labels, reliable, rois, quality, config) -> None:
    """Precision/coverage of the reliable labels and of the CAM argmax on the train masks."""
    target = batch["mask"].to(reliable.device, non_blocking=True)
    target = target.masked_fill(rois == 0, 255)
    with torch.no_grad():
        cam_labels = cam_argmax_labels(upsampled_cams(cams.detach(), tuple(target.shape[-2:])), cls_labels,
                                       config.cam_bg_threshold)
    quality["reliable"].update(reliable, target)
    quality["cam"].update(cam_labels, target)


def build_network(config: TrainConfig) -> torch.nn.Module:
    """The stage's network with its initial weights: RRMNet (rrm) or DeepLabV2 (fcn)."""
    if config.stage == "fcn":
        return build_fcn_network(config)
    network = build_rrm(config.backbone)
    network.dropout7.p = config.cls_dropout
    if config.weights:
        network.load_pretrained(load_state_dict_file(config.weights))
    return network


def build_run(config: TrainConfig, ctx: distributed.Context, out: Path) -> Run:
    torch.manual_seed(config.seed)
    core = build_network(config).to(ctx.device)
    groups = core.param_groups(config.lr, config.weight_decay)
    for group in groups:
        group["initial_lr"] = group["lr"] if config.optimizer == "sgd" else config.lr
        group["lr"] = group["initial_lr"]
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    else:
        optimizer = torch.optim.Adam(groups, lr=config.lr)
    model = DistributedDataParallel(core) if ctx.distributed else core
    energy_loss = None
    if config.stage == "rrm":
        energy_loss = rrm_ops.DenseEnergyLoss(
            weight=config.energy_weight,
            sigma_rgb=config.energy_sigma_rgb,
            sigma_xy=config.energy_sigma_xy,
            scale_factor=config.energy_scale,
        )
    return Run(config, ctx, model, core, optimizer, energy_loss, out)


def save_checkpoint(run: Run) -> None:
    if not run.ctx.is_main:
        return
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": run.core.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "step": run.step,
        "torch_rng": torch.get_rng_state(),
        "config": run.config.to_dict(),
    }
    if run.ctx.device.type == "cuda":
        payload["cuda_rng"] = torch.cuda.get_rng_state(run.ctx.device)
    save_atomic(payload, run.out / "last.pth")


def restore_checkpoint(run: Run, checkpoint: dict) -> None:
    run.core.load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.step = int(checkpoint["step"])
    torch.set_rng_state(checkpoint["torch_rng"])
    if "cuda_rng" in checkpoint and run.ctx.device.type == "cuda":
        torch.cuda.set_rng_state(checkpoint["cuda_rng"], run.ctx.device)


def _install_stop_handlers(run: Run) -> None:
    def request_stop(signum, _frame):
        run.stop_signal = signum

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)


def _stop_requested(run: Run) -> bool:
    """Whether any process was signalled (all processes must stop at the same step)."""
    flag = torch.tensor([float(run.stop_signal)])
    return bool(distributed.all_reduce_sum(flag).item() > 0)


def train(run: Run, train_set: VOCSegmentation, val_set: VOCSegmentation, log: ProgressLog,
          stop_at: int | None = None) -> dict[str, float] | None:
    """Train to ``max_steps`` and return the final metrics, or stop at step ``stop_at`` with a
    checkpoint (the schedule still runs to ``max_steps``) and return None."""
    config = run.config
    last_step = config.max_steps if stop_at is None else min(stop_at, config.max_steps)
    batches = StepBatches(len(train_set), config.batch_size, run.ctx.world_size, run.ctx.rank, config.seed)
    quality = {"reliable": LabelQuality(), "cam": LabelQuality()}
    while run.step < last_step:
        epoch, first = divmod(run.step, batches.steps_per_epoch)
        train_set.set_epoch(epoch)
        loader = DataLoader(train_set, batch_sampler=batches.of_epoch(epoch, first), num_workers=config.num_workers,
                            generator=torch.Generator(), pin_memory=run.ctx.device.type == "cuda")
        for batch in loader:
            poly_learning_rate(run.optimizer, run.step, config.max_steps, config.poly_power)
            losses = training_step(run, batch, quality)
            run.step += 1
            log.step(run.step, losses, images=config.batch_size * run.ctx.world_size)
            _periodic_work(run, val_set, quality, log)
            if _stop_requested(run):
                save_checkpoint(run)
                log.message(f"stopped by signal {run.stop_signal} at step {run.step}; resume with "
                            f"--resume {run.out / 'last.pth'}")
                raise SystemExit(128 + run.stop_signal if run.stop_signal else 1)
            if run.step >= last_step:
                break
    save_checkpoint(run)
    if run.step < config.max_steps:
        return None
    return _final_metrics(run, val_set, quality, log)


def _periodic_work(run: Run, val_set, quality, log: ProgressLog) -> None:
    config = run.config
    if config.checkpoint_every and run.step % config.checkpoint_every == 0 and run.step < config.max_steps:
        save_checkpoint(run)
    if config.val_every and run.step % config.val_every == 0 and run.step < config.max_steps:
        metrics = _validate(run, val_set, run.out / "panels" / f"step_{run.step:06d}.png")
        log.record(run.step, {f"val/{k}": v for k, v in {**metrics, **_quality_metrics(run, quality)}.items()})


def _validate(run: Run, val_set, panel: Path) -> dict[str, float]:
    """Stage rrm: CAM and segmentation-branch mIoU; stage fcn: segmentation mIoU."""
    if run.config.stage == "fcn":
        return validate_segmentation(run.core, val_set, run.ctx, panel, run.config.panel_images)
    return validate(run.core, val_set, run.config, run.ctx, panel)


def _quality_metrics(run: Run, quality: dict[str, LabelQuality]) -> dict[str, float]:
    """Reliable-label and CAM precision on the train masks (stage rrm; stage fcn has none)."""
    if run.config.stage == "fcn":
        return {}
    reliable, cam = quality["reliable"].reduced(), quality["cam"].reduced()
    return {
        "reliable_precision": reliable["precision"],
        "reliable_coverage": reliable["coverage"],
        "cam_train_precision": cam["precision"],
    }


def _final_metrics(run: Run, val_set, quality, log: ProgressLog) -> dict[str, float]:
    panel = run.out / "panels" / f"step_{run.step:06d}.png"
    metrics = {**_validate(run, val_set, panel), **_quality_metrics(run, quality)}
    metrics["seg_crf_miou"] = validate_with_crf(run.core, val_set, run.ctx, run.config.crf_val_scales)
    metrics.update(steps=run.step, wall_time_s=log.elapsed(), processes=run.ctx.world_size,
                   ranks_in_sync=distributed.parameters_in_sync(run.core))
    log.record(run.step, {f"val/{k}": v for k, v in metrics.items()})
    return metrics


def data_root(config: TrainConfig, ctx: distributed.Context) -> Path:
    """``config.data_root``, or the embedded synthetic dataset (generated by rank 0 on first use)."""
    if config.data_root is not None:
        return Path(config.data_root)
    if ctx.is_main:
        ensure_synthetic_dataset()
    distributed.barrier()
    return ensure_synthetic_dataset()


def datasets(config: TrainConfig, ctx: distributed.Context) -> tuple[VOCSegmentation, VOCSegmentation]:
    """The training split (stage fcn: with the pseudo masks) and the validation split."""
    root = data_root(config, ctx)
    train_set = VOCSegmentation(root, config.train_list, transform=TrainTransform(crop_size=config.crop_size),
                                mask_dir=config.pseudo_labels if config.stage == "fcn" else None, seed=config.seed)
    val_set = VOCSegmentation(root, config.val_list, transform=EvalTransform(), require_masks=True)
    return train_set, val_set


def run_folder(config: TrainConfig) -> Path:
    """``--out``; else the folder of the checkpoint resumed from; else ``runs/<timestamp>``."""
    if config.out:
        return Path(config.out)
    if config.resume:
        return Path(config.resume).parent
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def _effective_config(args: argparse.Namespace) -> tuple[TrainConfig, dict | None]:
    """The command-line config; when resuming, the checkpoint's config under the given flags."""
    config = config_from_args(args)
    if not config.resume:
        return config, None
    checkpoint = load_checkpoint(config.resume)
    saved = dict(checkpoint["config"])
    given = {name: getattr(args, name) for name in saved if getattr(args, name, None) is not None}
    merged = argparse.Namespace(config=None, **{**saved, **given})
    return config_from_args(merged), checkpoint


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rrm.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--stop-at", type=int, default=None,
                        help="stop at this step with a checkpoint, as an interruption would (for time-sliced jobs)")
    parser.add_argument("--two-step", action="store_true",
                        help="one-step RRM (the options above), pseudo labels of the train list, then step 2 "
                             "(stage fcn defaults), in OUT/one_step, OUT/pseudo_labels, OUT/fcn; rerun with the "
                             "same --out to resume")
    parser.add_argument("--fcn-max-steps", type=int, default=None,
                        help="with --two-step: steps of step 2 (default: the stage fcn default)")
    args = parser.parse_args(argv)
    try:
        if args.two_step:
            # Imported here because rrm.training.two_step builds on this module.
            from rrm.training.two_step import run_two_step

            return run_two_step(args)
        config, checkpoint = _effective_config(args)
        ctx = distributed.setup(config.device)
        run_training(config, checkpoint, ctx, args.stop_at)
        return 0
    except (ConfigError, CheckpointError, DatasetError, CommandError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        distributed.teardown()


def run_training(config: TrainConfig, checkpoint: dict | None, ctx: distributed.Context,
                 stop_at: int | None = None) -> dict[str, float] | None:
    """Train ``config`` (from ``checkpoint`` when resuming) in its run folder; returns the
    final metrics (also written to ``metrics.json``), or None when stopped at ``stop_at``."""
    out = run_folder(config)
    train_set, val_set = datasets(config, ctx)
    run = build_run(config, ctx, out)
    if checkpoint is not None:
        restore_checkpoint(run, checkpoint)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(config, out / "config.yaml")
    log = ProgressLog(out / "metrics.jsonl", total_steps=config.max_steps, start_step=run.step, enabled=ctx.is_main,
                      log_every=config.log_every)
    _install_stop_handlers(run)
    metrics = train(run, train_set, val_set, log, stop_at)
    if metrics is None:
        log.message(f"stopped at step {run.step} as asked; resume with --resume {out / 'last.pth'}")
        return None
    if ctx.is_main:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.message(f"done: {json.dumps(metrics)}\nrun folder: {out}")
    distributed.barrier()
    return metrics


if __name__ == "__main__":
    sys.exit(main())
