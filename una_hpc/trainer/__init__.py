"""Training loops: offline UNA (every registry head), online UNA and the PPO baseline, picked by loss.name."""
from __future__ import annotations

from pathlib import Path

from ..config import Config

# loss.name -> loop module (imported lazily: the online loops need rollout engines the offline loop does not).
LOOP_OF_LOSS = {"una_online": "online", "ppo": "ppo"}


def run_training(cfg: Config) -> Path | None:
    import importlib

    loop = importlib.import_module(f".{LOOP_OF_LOSS.get(cfg.loss.name, 'offline')}", __name__)
    return loop.train(cfg)
