"""The typed training configuration (the command line and YAML files that fill it:
:mod:`rrm.training.arguments`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rrm.utils.errors import ConfigError
from rrm_ops.lattice import check_sigma_range

# Options that must be > 0 or >= 0, and the intervals of the others that have one.
_POSITIVE = ("max_steps", "batch_size", "crop_size", "lr", "log_every", "alpha_low", "alpha_high", "cam_alpha",
             "energy_sigma_rgb", "energy_sigma_xy")
_NON_NEGATIVE = ("weight_decay", "momentum", "num_workers", "cls_only_steps", "val_every", "checkpoint_every",
                 "energy_weight", "panel_images")
_INTERVALS: dict[str, tuple[str, Callable[[float], bool]]] = {
    "energy_scale": ("(0, 1]", lambda value: 0 < value <= 1),
    "fg_quantile": ("[0, 1)", lambda value: 0 <= value < 1),
    "cam_floor": ("[0, 1)", lambda value: 0 <= value < 1),
    "bg_sure": ("[0, 1]", lambda value: 0 <= value <= 1),
    "crf_sure": ("[0, 1]", lambda value: 0 <= value <= 1),
}


@dataclass
class TrainConfig:
    """Everything a training run depends on. Field docs double as ``--help`` text."""

    stage: str = field(default="rrm", metadata={"help": "rrm (one-step RRM) or fcn (step 2 on pseudo labels)"})
    data_root: str | None = field(
        default=None, metadata={"help": "VOC-layout folder; default: the embedded synthetic dataset"}
    )
    train_list: str = field(default="train", metadata={"help": "training list name or path"})
    val_list: str = field(default="val", metadata={"help": "validation list name or path"})
    pseudo_labels: str | None = field(default=None, metadata={"help": "folder of pseudo-label PNGs (stage fcn)"})
    backbone: str = field(default="small", metadata={"help": "small or resnet38 (stage fcn: small or resnet101)"})
    weights: str | None = field(
        default=None, metadata={"help": "initial weights: PSA res38_cls.pth, an RRM checkpoint or a converted .params"}
    )
    out: str | None = field(default=None, metadata={"help": "run folder; default runs/<timestamp>"})
    max_steps: int = field(default=1300, metadata={"help": "optimisation steps"})
    batch_size: int = field(default=16, metadata={"help": "images per step per process"})
    crop_size: int = field(default=112, metadata={"help": "square training crop in pixels"})
    optimizer: str = field(
        default="adam",
        metadata={"help": "adam (one lr for all parameters; trains the small backbone from scratch) or sgd "
                          "(RRM's recipe: momentum, lr x1/x2/x10/x20 for backbone/head weights/biases)"},
    )
    lr: float = field(default=3e-3, metadata={"help": "base learning rate (sgd: of the backbone weights)"})
    weight_decay: float = field(default=0.0, metadata={"help": "weight decay (RRM's sgd recipe: 5e-4)"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    poly_power: float = field(default=0.9, metadata={"help": "exponent of the poly LR schedule"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, cuda:N or auto"})
    seed: int = field(default=0, metadata={"help": "seed of initialisation, data order and augmentation"})
    resume: str | None = field(default=None, metadata={"help": "checkpoint to resume from (e.g. RUN/last.pth)"})
    num_workers: int = field(default=2, metadata={"help": "data loading processes"})
    cls_dropout: float = field(default=0.0, metadata={"help": "dropout before the classifier (RRM: 0.5)"})
    cls_only_steps: int = field(
        default=1000, metadata={"help": "train the classification branch alone for the first N steps"}
    )
    cam_scales: tuple[float, ...] = field(
        default=(1.0, 1.5),
        metadata={"help": "CAM scales (RRM on VOC: 1,0.5,1.5,2; a half-size synthetic image gives an 8x8 feature map, "
                          "whose CAMs blur the mined labels)"},
    )
    alpha_low: float = field(default=4.0, metadata={"help": "background power of the low-background CRF"})
    alpha_high: float = field(default=32.0, metadata={"help": "background power of the high-background CRF"})
    cam_alpha: float = field(default=32.0, metadata={"help": "background power of the CAM argmax"})
    fg_quantile: float = field(default=0.6, metadata={"help": "quantile of a class's CAM kept as sure"})
    cam_floor: float = field(default=0.1, metadata={"help": "CAM values below this never count as sure"})
    bg_sure: float = field(default=0.8, metadata={"help": "background CAM score that counts as sure"})
    crf_sure: float = field(default=0.8, metadata={"help": "CRF confidence below which a pixel is ignored"})
    energy_weight: float = field(default=1e-7, metadata={"help": "weight of the dense energy loss"})
    energy_sigma_rgb: float = field(default=15.0, metadata={"help": "colour sigma of the dense energy loss"})
    energy_sigma_xy: float = field(default=100.0, metadata={"help": "spatial sigma of the dense energy loss"})
    energy_scale: float = field(default=0.5, metadata={"help": "scale at which the dense energy loss is computed"})
    cam_bg_threshold: float = field(
        default=0.2, metadata={"help": "background score of the CAM-argmax baseline (normalised CAMs)"}
    )
    crf_val_scales: tuple[float, ...] = field(
        default=(0.75, 1.0, 1.25),
        metadata={"help": "scales of the final validation under RRM's inference protocol (flip, dense CRF) and of "
                          "--two-step's pseudo labels; default: within the training rescale range 0.7-1.3 "
                          "(RRM on VOC: 1,0.5,1.5,2)"},
    )
    val_every: int = field(default=600, metadata={"help": "validate every N steps (0: only at the end)"})
    checkpoint_every: int = field(default=200, metadata={"help": "write last.pth every N steps"})
    log_every: int = field(default=50, metadata={"help": "progress line and metrics.jsonl record every N steps"})
    panel_images: int = field(default=4, metadata={"help": "validation images drawn in each panel PNG"})

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values no run can use (the stage's own checks:
        :meth:`rrm.training.stages.Stage.check`)."""
        for name in _POSITIVE:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in _NON_NEGATIVE:
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name, (interval, contains) in _INTERVALS.items():
            if not contains(getattr(self, name)):
                raise ConfigError(f"{name} must be in {interval}, got {getattr(self, name)}")
        if not math.isfinite(self.energy_weight):
            raise ConfigError(f"energy_weight must be finite, got {self.energy_weight}")
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if 1.0 not in self.cam_scales:
            raise ConfigError(f"cam_scales must include 1.0, got {self.cam_scales}")
        # The energy loss's lattice spans the downscaled crop's positions and 0..255 intensities.
        small_crop = math.floor(self.crop_size * self.energy_scale)
        try:
            check_sigma_range(self.energy_sigma_rgb, "energy_sigma_rgb", 255, 5, " for intensities 0..255")
            check_sigma_range(self.energy_sigma_xy, "energy_sigma_xy", (max(small_crop, 1) - 1) / self.energy_scale,
                              5, f" for crops of {self.crop_size} pixels downscaled by energy_scale")
        except ValueError as error:
            raise ConfigError(str(error)) from None

    def mining_kwargs(self) -> dict[str, float]:
        """Keyword arguments of ``rrm_ops.reliable_region_labels``."""
        names = ("alpha_low", "alpha_high", "cam_alpha", "fg_quantile", "cam_floor", "bg_sure", "crf_sure")
        return {name: getattr(self, name) for name in names}

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["cam_scales"] = list(self.cam_scales)
        data["crf_val_scales"] = list(self.crf_val_scales)
        return data


def save_yaml(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
