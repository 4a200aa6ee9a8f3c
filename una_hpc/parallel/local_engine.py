"""Single-process engine: torch AdamW (decay on matrices only), warmup + decay LambdaLR, global-norm clipping.

Checkpoints are one directory (model.pt, optimizer.pt, scheduler.pt, client_state.pt, una_engine.json) written to a
temp dir and renamed; every file is read back with weights_only=True (a planted pickle is refused, not run).
Tested by: .venv/bin/python -m pytest tests/distributed/test_local_engine.py -q
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from ..config import Config
from .checkpoint import read_meta, safe_load, staged_dir, write_meta
from .deepspeed_engine import CLIENT_FILE as DS_CLIENT_FILE
from .engine import TrainEngine
from .reshard import load_universal_into, model_states, universal_checkpoint
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
        self.poison_nonfinite(loss).backward()

    def step(self) -> dict[str, float]:
        lr = self.lr
        max_norm = self.cfg.optim.max_grad_norm
        norm = torch.nn.utils.clip_grad_norm_(self._params, max_norm if max_norm > 0 else float("inf"))
        skipped = not torch.isfinite(norm)
        if not skipped:  # a non-finite step leaves weights, optimizer and schedule untouched
            self.optimizer.step()
            self.scheduler.step()
            self.global_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        return {"grad_norm": float(norm), "lr": lr, "skipped": float(skipped)}

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
        if read_meta(d).get("backend") == "deepspeed":
            return self._load_deepspeed_checkpoint(d)
        read_meta(d, expect_backend="local")
        self._model.load_state_dict(safe_load(d / "model.pt", map_location=self.device))
        self.optimizer.load_state_dict(safe_load(d / "optimizer.pt", map_location=self.device))
        self.scheduler.load_state_dict(safe_load(d / "scheduler.pt"))
        extra = safe_load(d / "client_state.pt")  # tensors and plain values only (trainer/checkpoint.py)
        self.global_steps = extra["global_steps"]
        return extra["client_state"]

    def _load_deepspeed_checkpoint(self, d: Path) -> dict:
        """A ZeRO-1/2/3 checkpoint of any rank count, through DeepSpeed's universal layout (reshard.py)."""
        meta = read_meta(d)
        if meta["tp_size"] > 1 or meta["zero_stage"] == 0:
            raise ValueError(f"{d}: a ZeRO-0 or TP DeepSpeed checkpoint resumes under DeepSpeed only")
        src = universal_checkpoint(d, meta["tag"], is_main=True, barrier=lambda: None)
        ds_state = model_states(src, meta["tag"])
        applied = int(ds_state["global_steps"]) - int(ds_state["skipped_steps"])
        load_universal_into(self._model, self.optimizer, src, meta["tag"], applied)
        self.scheduler.load_state_dict(ds_state["lr_scheduler"])
        for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
            group["lr"] = lr  # an optimizer state dict would carry it; the universal layout does not
        self.global_steps = int(ds_state["global_steps"])
        return safe_load(d / DS_CLIENT_FILE)

    def consolidated_state_dict(self) -> dict[str, Tensor]:
        # No copy on CPU: export only reads these (the LoRA merge builds new tensors); a clone held 2x the model.
        return {k: v.detach().cpu() for k, v in self._model.state_dict().items()}
