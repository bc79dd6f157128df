"""The typed training configuration: defaults < YAML file (``--config``) < command line."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value or file is invalid; the message says which and why."""


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
        """Raise ConfigError for values no run can use."""
        positive = ("max_steps", "batch_size", "crop_size", "lr", "log_every")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        non_negative = ("weight_decay", "momentum", "num_workers", "cls_only_steps", "val_every",
                        "checkpoint_every", "energy_weight", "panel_images")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.stage not in ("rrm", "fcn"):
            raise ConfigError(f"stage must be 'rrm' or 'fcn', got {self.stage!r}")
        if self.stage == "fcn" and not self.pseudo_labels:
            raise ConfigError("stage fcn trains on pseudo labels: pass --pseudo-labels FOLDER "
                              "(written by python -m rrm.pseudo_labels)")
        if 1.0 not in self.cam_scales:
            raise ConfigError(f"cam_scales must include 1.0, got {self.cam_scales}")
        if not self.crf_val_scales or min(self.crf_val_scales) <= 0:
            raise ConfigError(f"crf_val_scales must be positive numbers, got {self.crf_val_scales}")
        if not 0 < self.energy_scale <= 1:
            raise ConfigError(f"energy_scale must be in (0, 1], got {self.energy_scale}")
        if not 0 <= self.fg_quantile < 1:
            raise ConfigError(f"fg_quantile must be in [0, 1), got {self.fg_quantile}")

    def mining_kwargs(self) -> dict[str, float]:
        """Keyword arguments of ``rrm_ops.reliable_region_labels``."""
        names = ("alpha_low", "alpha_high", "cam_alpha", "fg_quantile", "cam_floor", "bg_sure", "crf_sure")
        return {name: getattr(self, name) for name in names}

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["cam_scales"] = list(self.cam_scales)
        data["crf_val_scales"] = list(self.crf_val_scales)
        return data


_FIELD_TYPES = typing.get_type_hints(TrainConfig)

# Defaults of stage fcn where they differ from the one-step ones: step 2 fits fixed pseudo
# masks with plain cross-entropy, which needs no classification-only phase, and its budget
# is a few minutes on 2 CPU cores so that the whole two-step run stays near 20 minutes.
FCN_STAGE_DEFAULTS: dict[str, Any] = {"max_steps": 1000, "cls_only_steps": 0, "val_every": 500}


def _scalar_type(name: str) -> type:
    """The non-None type of a field (``str | None`` -> str, ``tuple[float, ...]`` -> tuple)."""
    hint = _FIELD_TYPES[name]
    if isinstance(hint, types.UnionType):
        return next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return typing.get_origin(hint) or hint


def _coerce(name: str, value: Any) -> Any:
    kind = _scalar_type(name)
    if value is None:
        if type(None) in typing.get_args(_FIELD_TYPES[name]):
            return None
        raise ConfigError(f"{name} may not be empty")
    try:
        if kind is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(float(item) for item in items)
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError("not a whole number")
        return kind(value)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{name} must be {kind.__name__}, got {value!r} ({error})") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of config fields (unknown keys are an error)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    unknown = sorted(set(data) - set(_FIELD_TYPES))
    if unknown:
        raise ConfigError(f"config file {path} has unknown options: {', '.join(unknown)}")
    return data


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and one ``--option-name`` per field (default: not given)."""
    parser.add_argument("--config", type=Path, help="YAML file of options (overridden by the command line)")
    for item in dataclasses.fields(TrainConfig):
        flag = "--" + item.name.replace("_", "-")
        default = item.default
        shown = ",".join(str(s) for s in default) if isinstance(default, tuple) else default
        if item.name in FCN_STAGE_DEFAULTS:
            shown = f"{shown}; stage fcn: {FCN_STAGE_DEFAULTS[item.name]}"
        parser.add_argument(flag, dest=item.name, default=None, metavar=item.name.upper(),
                            help=f"{item.metadata.get('help', '')} (default: {shown})")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Build the effective config: defaults, then ``args.config``, then given flags."""
    values: dict[str, Any] = load_yaml(args.config) if getattr(args, "config", None) else {}
    for name in _FIELD_TYPES:
        given = getattr(args, name, None)
        if given is not None:
            values[name] = given
    if values.get("stage", TrainConfig.stage) == "fcn":
        values = {**FCN_STAGE_DEFAULTS, **values}
    config = TrainConfig(**{name: _coerce(name, value) for name, value in values.items()})
    config.validate()
    return config


def save_yaml(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
