"""Functions named in the config as "module:function", resolved at run time (eval.gold_reward, and later hooks).

    gold = load_function(cfg.eval.gold_reward, setting="eval.gold_reward")   # None when the setting is empty
    .venv/bin/python -m pytest tests/unit/test_layering.py -q

A hook lets a higher layer (the embedded task) hand the trainer a function without the trainer importing it: the
config carries the name, this module imports it when a run needs it. Beside config at the bottom of the layers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from .config import ConfigError


def load_function(spec: str, setting: str = "hook") -> Callable | None:
    """The callable `spec` names ("package.module:function"), None for "", or a one-line ConfigError."""
    if not spec:
        return None
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{setting}={spec!r}: expected 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{setting}={spec!r}: cannot import {module_name} ({e})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"{setting}={spec!r}: {module_name} has no function {attr}")
    return fn
