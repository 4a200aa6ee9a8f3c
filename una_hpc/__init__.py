"""una-hpc: a training backend for UNA (Unified Alignment). The Python API, for notebooks and scripts:

    from una_hpc import Config, load_config, train, evaluate

    final = train("configs/quickstart.yaml", ["trainer.max_steps=20"])         # -> Path of the final HF model dir
    final = train("configs/quickstart.yaml", loss={"name": "dpo", "beta": 0.1})  # sections as keyword mappings
    cfg = load_config("configs/quickstart.yaml"); cfg.trainer.max_steps = 20; train(cfg)
    result = evaluate("configs/quickstart.yaml")                               # the dict `una-hpc eval` writes

`train` and `evaluate` run exactly what `una-hpc train` / `una-hpc eval` run (una_hpc.cli.run_train /
run_evaluate) on a config that passed the same checks (una_hpc.config.validate_config: ConfigError listing every
problem; ConfigWarning for keys without effect). Importing una_hpc is light: torch, transformers and the trainer
load on the first call.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from .config import Config, ConfigError, ConfigWarning, apply_overrides, apply_values, load_config, validate_config

__all__ = ["Config", "ConfigError", "ConfigWarning", "load_config", "resolve_config", "train", "evaluate"]

ConfigLike = Config | str | Path | None


def resolve_config(
    config: ConfigLike = None, overrides: list[str] | dict[str, Any] | None = None, **sections: dict[str, Any]
) -> Config:
    """A validated Config from a Config (copied, never changed), a YAML path, or None (the defaults), with
    `overrides` ("key.sub=value" strings as on the command line, or {"key.sub": value}) and then `sections` (e.g.
    trainer={"max_steps": 2}) applied on top. Raises ConfigError with every problem, one line each; warns
    (ConfigWarning) once per key without effect."""
    if isinstance(config, Config):
        cfg = copy.deepcopy(config)
    else:
        cfg = load_config(config, validate=False)
    if isinstance(overrides, dict):
        apply_values(cfg, overrides)
    elif overrides:
        apply_overrides(cfg, list(overrides))
    if sections:
        apply_values(cfg, sections)
    return validate_config(cfg)


def train(
    config: ConfigLike = None, overrides: list[str] | dict[str, Any] | None = None, **sections: dict[str, Any]
) -> Path:
    """Train as `una-hpc train` does (offline UNA, online UNA or PPO, by loss.name); returns the final model dir.
    Arguments as `resolve_config`."""
    from .cli import run_train

    return run_train(resolve_config(config, overrides, **sections))


def evaluate(
    config: ConfigLike = None, overrides: list[str] | dict[str, Any] | None = None, **sections: dict[str, Any]
) -> dict:
    """Evaluate trainer.output_dir/final as `una-hpc eval` does; returns its result dict (eval.json). Arguments as
    `resolve_config`."""
    from .cli import run_evaluate

    return run_evaluate(resolve_config(config, overrides, **sections))
