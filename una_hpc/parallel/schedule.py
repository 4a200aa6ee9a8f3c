"""The optimizer pieces both engines share: AdamW parameter groups and the warmup + decay learning-rate schedule.

LocalEngine and DeepSpeedEngine build the same `torch.optim.lr_scheduler.LambdaLR` from `lr_lambda`, so the two paths
cannot drift apart. Tested by: .venv/bin/python -m pytest tests/distributed/test_local_engine.py -q
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from ..config import OptimConfig

NO_DECAY_MARKERS = ("bias", "norm")


def decays(name: str, param: nn.Parameter) -> bool:
    """Weight decay applies to matrices only: biases, norm scales and other vectors are excluded."""
    lowered = name.lower()
    return param.ndim >= 2 and not any(m in lowered for m in NO_DECAY_MARKERS)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into a decayed and a non-decayed AdamW group (empty groups dropped)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if decays(name, p) else no_decay).append(p)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters")
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def lr_lambda(optim: OptimConfig, max_steps: int) -> Callable[[int], float]:
    """Multiplier of optim.lr at optimizer step `step` (0-based): linear warmup, then cosine/linear/constant decay.

    Warmup: (step + 1) / warmup_steps, so the first step already moves and step warmup_steps - 1 reaches the peak.
    Decay runs from the end of warmup to max_steps (progress in [0, 1)): cosine 0.5 * (1 + cos(pi * p)), linear 1 - p.
    """
    warmup, total, kind = optim.warmup_steps, max(max_steps, 1), optim.schedule
    if kind not in ("cosine", "linear", "constant"):
        raise ValueError(f"optim.schedule must be cosine, linear or constant, got {kind!r}")

    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = min(max(step - warmup, 0) / max(total - warmup, 1), 1.0)
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - progress

    return factor
