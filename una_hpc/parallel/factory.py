"""Which TrainEngine a run gets: the single-process LocalEngine or the DeepSpeedEngine (parallel.backend, WORLD_SIZE).

    engine = build_engine(model, cfg)

Its own module so that engine.py (the base class) never imports its subclasses.
Tested by: .venv/bin/python -m pytest tests/distributed/test_local_engine.py -q
"""

from __future__ import annotations

from torch import nn

from ..config import Config
from .deepspeed_engine import DeepSpeedEngine
from .distributed import env_world_size, use_deepspeed
from .engine import TrainEngine
from .local_engine import LocalEngine


def select_backend(cfg: Config) -> str:
    """The backend, "deepspeed" or "local", from parallel.backend and the launcher's WORLD_SIZE."""
    if use_deepspeed(cfg):
        return "deepspeed"
    if env_world_size() > 1:
        raise ValueError(
            f"parallel.backend={cfg.parallel.backend} in a {env_world_size()}-process launch: "
            "use parallel.backend=deepspeed (or auto)"
        )
    return "local"


def build_engine(model: nn.Module, cfg: Config, *, process_group=None) -> TrainEngine:
    """The one constructor the trainer calls; the model is already on its device (or built under ZeRO-3 init)."""
    engine = DeepSpeedEngine if select_backend(cfg) == "deepspeed" else LocalEngine
    return engine(model, cfg, process_group=process_group)
