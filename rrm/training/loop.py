"""The training loop of every stage: fixed per-step batches, the poly schedule, periodic
checkpoints and validation, a clean stop on SIGINT/SIGTERM, and the final metrics."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from rrm.data import VOCSegmentation
from rrm.evaluation.validation import validate_with_crf
from rrm.training.checkpoint import restore_checkpoint, save_checkpoint
from rrm.training.config import TrainConfig
from rrm.training.optim import build_optimizer, poly_learning_rate
from rrm.training.progress import ProgressLog, format_metric
from rrm.training.stages import Stage, stage_class
from rrm.utils import distributed
from rrm.utils.errors import ConfigError

CHECKPOINT_NAME = "last.pth"


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
    stage: Stage
    model: torch.nn.Module  # DDP-wrapped when distributed
    core: torch.nn.Module  # the stage's network itself
    optimizer: torch.optim.Optimizer
    out: Path
    step: int = 0
    stop_signal: int = 0
    elapsed_before: float = 0.0  # training time of the runs this one resumes
    started: float = field(default_factory=time.perf_counter)

    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT_NAME

    def elapsed(self) -> float:
        """Seconds of training so far, over every resumption."""
        return self.elapsed_before + time.perf_counter() - self.started

    def save_checkpoint(self) -> None:
        """Write ``last.pth`` (every process calls it: the stage state is summed over them;
        rank 0 writes)."""
        stage_state = self.stage.state_dict()
        if self.ctx.is_main:
            save_checkpoint(self.checkpoint_path, self.core, self.optimizer, self.step, self.config, self.ctx.device,
                            stage_state, self.elapsed())

    def restore(self, checkpoint: dict, path: Path) -> None:
        """Continue from ``checkpoint`` (of :func:`~rrm.models.weights.load_checkpoint` on ``path``)."""
        self.step = restore_checkpoint(checkpoint, path, self.core, self.optimizer, self.ctx.device)
        self.stage.load_state_dict(checkpoint.get("stage_state", {}), self.ctx)
        self.elapsed_before = float(checkpoint.get("elapsed_s", 0.0))
        self.started = time.perf_counter()


def build_run(config: TrainConfig, ctx: distributed.Context, out: Path) -> Run:
    """The stage, its network (seeded by ``config.seed``) on the device and its optimiser."""
    stage = stage_class(config.stage)(config)
    torch.manual_seed(config.seed)
    core = stage.build_network().to(ctx.device)
    optimizer = build_optimizer(core, config)
    model = DistributedDataParallel(core) if ctx.distributed else core
    return Run(config, ctx, stage, model, core, optimizer, out)


def _install_stop_handlers(run: Run) -> None:
    def request_stop(signum, _frame):
        run.stop_signal = signum

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)


def _stop_requested(run: Run) -> bool:
    """Whether any process was signalled (all processes must stop at the same step)."""
    return distributed.any_process(run.stop_signal != 0)


def train(run: Run, train_set: VOCSegmentation, val_set: VOCSegmentation, log: ProgressLog,
          stop_at: int | None = None) -> dict[str, float] | None:
    """Train to ``max_steps`` and return the final metrics, or stop at step ``stop_at`` with a
    checkpoint (the schedule still runs to ``max_steps``) and return None. A SIGINT or
    SIGTERM stops every process at the same step with a checkpoint."""
    config = run.config
    _install_stop_handlers(run)
    last_step = config.max_steps if stop_at is None else min(stop_at, config.max_steps)
    batches = StepBatches(len(train_set), config.batch_size, run.ctx.world_size, run.ctx.rank, config.seed)
    while run.step < last_step:
        epoch, first = divmod(run.step, batches.steps_per_epoch)
        train_set.set_epoch(epoch)
        loader = DataLoader(train_set, batch_sampler=batches.of_epoch(epoch, first), num_workers=config.num_workers,
                            generator=torch.Generator(), pin_memory=run.ctx.device.type == "cuda")
        for batch in loader:
            poly_learning_rate(run.optimizer, run.step, config.max_steps, config.poly_power)
            losses = run.stage.training_step(run.model, run.optimizer, batch, run.step, run.ctx.device)
            run.step += 1
            log.step(run.step, losses, images=config.batch_size * run.ctx.world_size,
                     lr=run.optimizer.param_groups[0]["lr"])
            _periodic_work(run, val_set, log)
            if _stop_requested(run):
                run.save_checkpoint()
                log.message(f"stopped by signal {run.stop_signal} at step {run.step}; resume with "
                            f"--resume {run.checkpoint_path}")
                raise SystemExit(128 + run.stop_signal if run.stop_signal else 1)
            if run.step >= last_step:
                break
    run.save_checkpoint()
    if run.step < config.max_steps:
        return None
    return _final_metrics(run, val_set, log)


def _periodic_work(run: Run, val_set: VOCSegmentation, log: ProgressLog) -> None:
    config = run.config
    if config.checkpoint_every and run.step % config.checkpoint_every == 0 and run.step < config.max_steps:
        run.save_checkpoint()
    if config.val_every and run.step % config.val_every == 0 and run.step < config.max_steps:
        metrics = run.stage.validate(run.core, val_set, run.ctx, _panel_path(run), run.step)
        log.record(run.step, {f"val/{k}": v for k, v in metrics.items()})
        log.message(f"validation at step {run.step}: " + " ".join(f"{k} {format_metric(v)}" for k, v in metrics.items()))
        log.draw_curves()


def _panel_path(run: Run) -> Path:
    return run.out / "panels" / f"step_{run.step:06d}.png"


def _final_metrics(run: Run, val_set: VOCSegmentation, log: ProgressLog) -> dict[str, float]:
    metrics = run.stage.validate(run.core, val_set, run.ctx, _panel_path(run), run.step)
    metrics["seg_crf_miou"] = validate_with_crf(run.core, val_set, run.ctx, run.config.crf_val_scales)
    metrics.update(steps=run.step, wall_time_s=round(run.elapsed(), 3), processes=run.ctx.world_size,
                   ranks_in_sync=distributed.parameters_in_sync(run.core))
    log.record(run.step, {f"final/{k}": v for k, v in metrics.items()})
    log.draw_curves()
    return metrics
