"""Typed configuration: one dataclass per concern, YAML files and `key.sub=value` overrides.

    cfg = load_config("configs/quickstart.yaml", ["loss.beta=0.1", "trainer.max_steps=20"])

Every field carries a docstring (`una-hpc config [CONFIG] [key=value ...]` prints them all, see `describe`). An
unknown key or a wrongly typed value raises ConfigError with one line that names the key and what is valid; nothing
else in the package parses configuration.

One module per concern: config_schema.py (the dataclasses), this file (YAML and overrides), config_checks.py
(the rules below), config_docs.py (`una-hpc config`); import every public name from here.

Checked when the config loads (`load_config` -> `validate_config`), before anything runs: every range (ZeRO stage
0-3, top_p in (0, 1], lr > 0, ...) and every cross-field rule that needs no model, data or world size (see
`config_errors` for the list). All problems are reported at once, one line each: `ConfigError.problems`, joined by
newlines in `str(err)`; the CLI prints each as its own `error:` line. What needs the launch stays a run-time check:
trainer.batch_size and rollout.prompts_per_step divisible by the data-parallel ranks, paths that must exist.

Errors and warnings. An error is a value that cannot run, contradicts another key, or needs something missing
(out of range, resume+overwrite, offload without ZeRO, tensorboard not installed, a data.view the loss cannot
train on). A key that is valid but has no effect in this run is a warning, never an error: e.g. `ppo.*` while
loss.name is not ppo, `rollout.*` for an offline loss, loss.binary_kind outside una_binary/mixed, LoRA keys with
lora_rank=0 ("... is ignored by loss.name=dpo"). Overriding loss.name on the command line of a YAML tuned for
another loss is the documented workflow, so what it leaves behind must not stop the run. Warnings are only for keys
set away from their defaults; they are ConfigWarning (`warnings.warn`), which the CLI prints as `warning:` lines.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

# The schema, its checks and its docs live in their own modules; every public name is importable from here.
from .config_checks import LOSS_FEEDBACK, LOSS_KEYS, LOSS_LOOPS, config_errors, config_warnings, validate_config
from .config_docs import FieldInfo, config_fields, describe, field_docs
from .config_schema import (
    Config,
    ConfigError,
    ConfigWarning,
    DataConfig,
    DataFormat,
    EvalConfig,
    KLEstimator,
    LossConfig,
    LossName,
    ModelConfig,
    OptimConfig,
    ParallelConfig,
    PPOConfig,
    RolloutConfig,
    TaskConfig,
    TrainerConfig,
    _section_types,
)

__all__ = [
    "Config",
    "ConfigError",
    "ConfigWarning",
    "DataConfig",
    "DataFormat",
    "EvalConfig",
    "FieldInfo",
    "KLEstimator",
    "LOSS_FEEDBACK",
    "LOSS_KEYS",
    "LOSS_LOOPS",
    "LossConfig",
    "LossName",
    "ModelConfig",
    "OptimConfig",
    "PPOConfig",
    "ParallelConfig",
    "RolloutConfig",
    "TaskConfig",
    "TrainerConfig",
    "apply_overrides",
    "apply_values",
    "config_errors",
    "config_fields",
    "config_warnings",
    "describe",
    "field_docs",
    "load_config",
    "save_config",
    "to_dict",
    "validate_config",
]


def _convert(key: str, value: Any, tp: Any) -> Any:
    """Check/convert `value` against annotation `tp`; raise a one-line ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"config key {key}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"config key {key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "3e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key {key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key {key}: expected a string, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise ConfigError(f"config key {key}: expected a list, got {value!r}")
        return [_convert(key, v, item) for v in value]
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key}: expected a mapping, got {value!r}")
        return {str(k): _convert(f"{key}.{k}", v, val_tp) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"config key {key}: union types are not supported")  # none are used
    raise ConfigError(f"config key {key}: unsupported type {tp}")


def _set(cfg: Config, dotted: str, value: Any) -> None:
    parts = dotted.split(".", 1)
    sections = [f.name for f in dataclasses.fields(cfg)]
    if parts[0] not in sections:
        raise ConfigError(f"unknown config section {parts[0]!r} in {dotted!r}; valid: {', '.join(sections)}")
    section = getattr(cfg, parts[0])
    if len(parts) == 1:
        if not isinstance(value, dict):
            raise ConfigError(f"config section {dotted}: expected a mapping of its keys")
        for k, v in value.items():
            _set(cfg, f"{dotted}.{k}", v)
        return
    name, rest = parts[1].split(".", 1) if "." in parts[1] else (parts[1], None)
    hints = _section_types(section)
    if name not in hints:
        raise ConfigError(f"unknown config key {parts[0]}.{name}; valid: {', '.join(sorted(hints))}")
    if rest is not None:  # dict entry, e.g. loss.type_weights.score=2
        current = dict(getattr(section, name))
        current[rest] = value
        value, rest_key = current, f"{parts[0]}.{name}"
    else:
        rest_key = dotted
    setattr(section, name, _convert(rest_key, value, hints[name]))


def _set_collecting(cfg: Config, dotted: str, value: Any, problems: list[str]) -> None:
    """`_set`, key by key for a section mapping, appending each one-line problem instead of stopping at the first."""
    if "." not in dotted and isinstance(value, dict) and dotted in {f.name for f in dataclasses.fields(cfg)}:
        for k, v in value.items():
            _set_collecting(cfg, f"{dotted}.{k}", v, problems)
        return
    try:
        _set(cfg, dotted, value)
    except ConfigError as e:
        problems.extend(e.problems)


def _parse_overrides(cfg: Config, overrides: list[str], problems: list[str]) -> None:
    for item in overrides:
        if "=" not in item:
            problems.append(f"override {item!r} is not key.sub=value")
            continue
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set_collecting(cfg, key.strip(), value, problems)


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply `key.sub=value` strings; values are parsed as YAML scalars (1e-5, true, [a, b]). Every unknown key or
    bad value is reported, all at once (ConfigError.problems); the result is not validated (see validate_config)."""
    problems: list[str] = []
    _parse_overrides(cfg, overrides, problems)
    if problems:
        raise ConfigError(problems)
    return cfg


def apply_values(cfg: Config, values: dict[str, Any]) -> Config:
    """Set Python values by key: {"trainer.max_steps": 2, "trainer": {"seed": 1}, "data.path": Path(...)}; the same
    type checks as YAML and overrides (path-like values become strings), every problem reported at once."""
    problems: list[str] = []
    for key, value in values.items():
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        elif isinstance(value, dict):
            value = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in value.items()}
        _set_collecting(cfg, key, value, problems)
    if problems:
        raise ConfigError(problems)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, *, validate: bool = True) -> Config:
    """Defaults <- YAML file <- overrides, then `validate_config` (ConfigError with every problem, one line each;
    ConfigWarning for keys without effect). Unknown keys and bad values are reported all at once too."""
    cfg = Config()
    problems: list[str] = []
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections")
        for section, values in raw.items():
            _set_collecting(cfg, str(section), values, problems)
    _parse_overrides(cfg, overrides or [], problems)
    if problems:  # values that did not parse: range and cross-field rules would only add noise
        raise ConfigError(problems)
    return validate_config(cfg) if validate else cfg


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
