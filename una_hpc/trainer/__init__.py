"""Training loops: offline UNA (every registry head), online UNA and the PPO baseline, picked by loss.name."""

from __future__ import annotations

from pathlib import Path

from ..config import Config


def run_training(cfg: Config) -> Path | None:
    """The loop the loss head names (imported lazily: online loops need rollout engines the offline one does not)."""
    import importlib

    from ..losses import get_head

    return importlib.import_module(f".{get_head(cfg.loss.name).loop}", __name__).train(cfg)
