"""The training configuration from the command line: defaults < the stage's defaults <
YAML file (``--config``) < flags."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from rrm.training.config import TrainConfig
from rrm.training.stages import STAGES, stage_class
from rrm.utils.cli import parse_scales
from rrm.utils.errors import ConfigError

_FIELD_TYPES = typing.get_type_hints(TrainConfig)


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
    if kind is tuple:
        try:
            return parse_scales(value)
        except ValueError as error:
            raise ConfigError(f"{name}: {error}") from None
    try:
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
        for stage in STAGES.values():
            if item.name in stage.defaults:
                shown = f"{shown}; stage {stage.name}: {stage.defaults[item.name]}"
        parser.add_argument(flag, dest=item.name, default=None, metavar=item.name.upper(),
                            help=f"{item.metadata.get('help', '')} (default: {shown})")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Build the effective config: defaults, the stage's defaults, then ``args.config``,
    then given flags; raises :class:`ConfigError` for values no run of the stage can use."""
    values: dict[str, Any] = load_yaml(args.config) if getattr(args, "config", None) else {}
    for name in _FIELD_TYPES:
        given = getattr(args, name, None)
        if given is not None:
            values[name] = given
    stage = stage_class(values.get("stage", TrainConfig.stage))
    values = {**stage.defaults, **values}
    config = TrainConfig(**{name: _coerce(name, value) for name, value in values.items()})
    config.validate()
    stage.check(config)
    return config
