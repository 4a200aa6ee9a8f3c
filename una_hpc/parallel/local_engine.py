"""Single-process engine: torch AdamW (decay on matrices only), warmup + decay LambdaLR, global-norm clipping.

Checkpoints are one directory (model.pt, optimizer.pt, scheduler.pt, client_state.pt, una_engine.json) written to a
temp dir and renamed. Tested by: .venv/bin/python -m pytest tests/distributed/test_local_engine.py -q
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from ..config import Config
from .checkpoint import read_meta, staged_dir, write_meta
from .engine import TrainEngine
from .schedule import lr_lambda, param_groups


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.AdamW:
    o = cfg.optim
    return torch.optim.AdamW(
        param_groups(model, o.weight_decay),
        lr=o.lr,
        betas=(o.adam_beta1, o.adam_beta2),
        eps=o.adam_eps,
        weight_decay=o.weight_decay,
    )


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Config) -> LambdaLR:
    return LambdaLR(optimizer, lr_lambda(cfg.optim, cfg.trainer.max_steps))


class LocalEngine(TrainEngine):
    def __init__(self, model: nn.Module, cfg: Config, *, process_group=None):
        del process_group  # one process: nothing to communicate
        self.cfg = cfg
        self._model = model
        self.optimizer = build_optimizer(model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self._params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.global_steps = 0
        self._release_after_backward = []

    @property
    def module(self) -> nn.Module:
        return self._model

    def __call__(self, *args, **kwargs) -> Any:
        return self._model(*args, **kwargs)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.cfg.trainer.dtype == "bfloat16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def backward(self, loss: Tensor) -> None:
        loss.backward()

    def step(self) -> dict[str, float]:
        lr = self.lr
        max_norm = self.cfg.optim.max_grad_norm
        norm = torch.nn.utils.clip_grad_norm_(self._params, max_norm if max_norm > 0 else float("inf"))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_steps += 1
        return {"grad_norm": float(norm), "lr": lr}

    @property
    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def save_checkpoint(self, directory: str | Path, client_state: dict) -> None:
        with staged_dir(directory, is_main=True, barrier=lambda: None) as tmp:
            torch.save(self._model.state_dict(), tmp / "model.pt")
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
            torch.save({"client_state": client_state, "global_steps": self.global_steps}, tmp / "client_state.pt")
            write_meta(tmp, backend="local", zero_stage=0, tp_size=1, world_size=1)

    def load_checkpoint(self, directory: str | Path) -> dict:
        d = Path(directory)
        read_meta(d, expect_backend="local")
        self._model.load_state_dict(torch.load(d / "model.pt", map_location=self.device, weights_only=True))
        self.optimizer.load_state_dict(torch.load(d / "optimizer.pt", map_location=self.device, weights_only=True))
        self.scheduler.load_state_dict(torch.load(d / "scheduler.pt", weights_only=True))
        extra = torch.load(d / "client_state.pt", weights_only=False)
        self.global_steps = extra["global_steps"]
        return extra["client_state"]

    def consolidated_state_dict(self) -> dict[str, Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self._model.state_dict().items()}
