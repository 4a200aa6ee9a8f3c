"""DeepSpeed engine: ZeRO-0..3, AutoTP, bf16, optimizer offload, behind the TrainEngine interface.

    deepspeed --num_gpus 2 --no_local_rank my_script.py      # (DS_ACCELERATOR=cpu on a CPU machine)
    engine = build_engine(model, cfg)                        # parallel.backend=deepspeed or auto

The scheduler is the same LambdaLR as LocalEngine's (schedule.lr_lambda), handed to deepspeed.initialize as a
factory, so DeepSpeed steps and checkpoints it. Loss scaling: backward multiplies the loss by the data-parallel
world size to undo DeepSpeed's gradient averaging (engine.py docstring). Tested by:
.venv/bin/python -m pytest tests/distributed/test_deepspeed_engine.py -q
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from ..config import Config
from .checkpoint import read_meta, safe_load, staged_dir, write_meta
from .distributed import init_distributed
from .ds_config import build_ds_config
from .engine import TrainEngine
from .grad_norm import global_grad_norm
from .reshard import universal_checkpoint
from .schedule import lr_lambda, param_groups

CHECKPOINT_TAG = "state"
CLIENT_FILE = "una_client_state.pt"
"""The trainer's client state, beside DeepSpeed's files and not inside them: ours is read with weights_only=True,
DeepSpeed's own files are read by DeepSpeed (weights_only=False, docs/faults.md)."""


class DeepSpeedEngine(TrainEngine):
    def __init__(self, model: nn.Module, cfg: Config, *, process_group=None):
        info = init_distributed(cfg)  # sets DS_ACCELERATOR=cpu first where needed
        if process_group is not None and dist.get_world_size(process_group) != info.world_size:
            raise ValueError(
                "DeepSpeedEngine runs over the whole launch (the default group); "
                "a sub-group needs a DeepSpeed mpu, which this engine does not build"
            )
        import deepspeed
        from deepspeed.utils import groups

        self.cfg = cfg
        hidden = getattr(getattr(model, "config", None), "hidden_size", None)
        self.ds_config = build_ds_config(cfg, hidden if isinstance(hidden, int) else None)
        schedule = lr_lambda(cfg.optim, cfg.trainer.max_steps)
        # Unsharded shapes, recorded before AutoTP replaces layers (ZeRO-3 init keeps them as ds_shape).
        self._param_shapes = {n: list(getattr(p, "ds_shape", p.shape)) for n, p in model.named_parameters()}
        self._ds, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model,
            model_parameters=param_groups(model, cfg.optim.weight_decay),
            config=self.ds_config,
            lr_scheduler=lambda opt: LambdaLR(opt, schedule),
            dist_init_required=False,
        )
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.dp_group = self._ds.data_parallel_group
        self.dp_world_size = dist.get_world_size(self.dp_group)
        self.dp_rank = dist.get_rank(self.dp_group)
        self.tp_size = cfg.parallel.tp_size
        self.tp_group = groups.get_tensor_model_parallel_group() if self.tp_size > 1 else None
        # DeepSpeed divides reduced gradients by the size of the group it reduces over.
        self._loss_scale = float(self._ds.seq_dp_world_size)
        self.zero_stage = cfg.parallel.zero_stage
        # ZeRO-0 (fp32 only, see ds_config.py) keeps no global norm: measure it; the grads are reduced by then.
        self._measure_norm = self.zero_stage == 0
        self._release_after_backward = []

    @property
    def module(self) -> nn.Module:
        return self._ds.module

    @property
    def ds_engine(self):
        """The deepspeed.DeepSpeedEngine itself (for what this interface does not cover)."""
        return self._ds

    def __call__(self, *args, **kwargs) -> Any:
        return self._ds(*args, **kwargs)

    def backward(self, loss: Tensor) -> None:
        self._ds.backward(self.poison_nonfinite(loss) * self._loss_scale, scale_wrt_gas=False)
        self._run_releases()

    def step(self) -> dict[str, float]:
        self._run_releases()
        lr = self.lr
        norm = global_grad_norm(self.module.parameters(), self.tp_group) if self._measure_norm else None
        if norm is not None and not math.isfinite(norm):
            # ZeRO-0 (a torch optimizer) would apply it: skip; the grads are already reduced, so all ranks agree.
            self._ds.zero_grad()
            return {"grad_norm": norm, "lr": lr, "skipped": 1.0}
        # ZeRO-1/2/3 skip a non-finite global norm themselves (fp32 always; bf16 with check_grad_overflow, on
        # by default) and leave the scheduler alone: `skipped_steps` says whether it happened.
        skipped_before = self._ds.skipped_steps
        self._ds.step()
        if norm is None:
            ds_norm = self._ds.get_global_grad_norm()
            norm = float(ds_norm) if ds_norm is not None else float("nan")
        return {"grad_norm": norm, "lr": lr, "skipped": float(self._ds.skipped_steps > skipped_before)}

    @property
    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    @property
    def global_steps(self) -> int:
        return int(self._ds.global_steps)

    def hidden_states(self, **inputs) -> Tensor:
        weight = self.output_weight()
        held = self.zero_stage == 3 and _available(weight) and _context_depth(weight) > 0
        out = super().hidden_states(**inputs)
        if held and not _available(weight):
            # The lm_head's own (empty) forward released a weight the caller holds in gathered_params: fetch it
            # again; the caller's context partitions it on exit.
            weight.all_gather(param_list=[weight])
        return out

    def _prepare_output_weight(self, weight: nn.Parameter) -> Callable[[], None] | None:
        if self.zero_stage != 3 or _available(weight):
            return None
        if _context_depth(weight) > 0:  # inside the caller's gathered_params, released by a module hook
            weight.all_gather(param_list=[weight])
            return None
        import deepspeed

        ctx = deepspeed.zero.GatheredParameters([weight], modifier_rank=None)
        ctx.__enter__()
        return lambda: ctx.__exit__(None, None, None)

    def gathered_params(self, params: Iterable[nn.Parameter]) -> contextlib.AbstractContextManager:
        if self.zero_stage != 3:
            return contextlib.nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(params), modifier_rank=None)

    def save_checkpoint(self, directory: str | Path, client_state: dict) -> None:
        with staged_dir(directory, self.is_main, self.barrier) as tmp:
            self._ds.save_checkpoint(str(tmp), tag=CHECKPOINT_TAG)
            if self.is_main:
                torch.save(client_state, tmp / CLIENT_FILE)
                write_meta(
                    tmp,
                    backend="deepspeed",
                    zero_stage=self.zero_stage,
                    tp_size=self.tp_size,
                    world_size=self.world_size,
                    tag=CHECKPOINT_TAG,
                    dtype=self.cfg.trainer.dtype,
                    param_shapes=self._param_shapes,
                )

    def load_checkpoint(self, directory: str | Path) -> dict:
        meta = read_meta(directory, expect_backend="deepspeed")
        if (meta["zero_stage"], meta["tp_size"]) != (self.zero_stage, self.tp_size):
            raise ValueError(
                f"{directory}: saved with zero_stage={meta['zero_stage']} tp_size={meta['tp_size']}, "
                f"this run has zero_stage={self.zero_stage} tp_size={self.tp_size}"
            )
        client = safe_load(Path(directory) / CLIENT_FILE)  # before DeepSpeed unpickles its own files
        source, universal = str(directory), meta["world_size"] != self.world_size and self.zero_stage > 0
        if universal:  # another rank count: re-partition from DeepSpeed's universal layout (reshard.py)
            if self.tp_size > 1:
                raise ValueError(f"{directory}: saved by {meta['world_size']} ranks; a TP run resumes on as many")
            source = str(universal_checkpoint(directory, meta["tag"], self.is_main, self.barrier))
        self._ds._config.load_universal_checkpoint = universal
        try:
            path, _ = self._ds.load_checkpoint(
                source, tag=CHECKPOINT_TAG, load_optimizer_states=True, load_lr_scheduler_states=True
            )
        finally:
            self._ds._config.load_universal_checkpoint = False
        if universal and self.zero_stage == 3:
            _refresh_zero3_partitions(self._ds.optimizer)
        if path is None:
            raise FileNotFoundError(f"{directory}: DeepSpeed found no checkpoint with tag {CHECKPOINT_TAG}")
        return client

    def consolidated_state_dict(self) -> dict[str, Tensor] | None:
        if self.zero_stage == 3 or self.tp_size > 1:
            # Gathers ZeRO-3 partitions and AutoTP shards layer by layer onto rank 0 (DeepSpeed's own export path).
            return self._ds._consolidated_16bit_state_dict()
        if not self.is_main:
            return None
        return {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}


def _refresh_zero3_partitions(optimizer) -> None:
    """Two repairs after DeepSpeed 0.19's ZeRO-3 universal load (without them a 2 -> 3 rank resume drifted 3.5% by
    its third step). It fills the fp32 master partitions but, without optimizer swapping, not the module's own
    partitions, so the first step ran the initial weights: copy master -> module, as DeepSpeed does after each
    step. And it gives every sub-group's Adam state the same `step` tensor, which torch's Adam then increments once
    per sub-group per step (wrong bias correction from the second step on): give each its own copy."""
    for sub_group, fp32 in enumerate(optimizer.fp32_partitioned_groups_flat):
        optimizer._reassign_or_swap_out_partitioned_parameters(sub_group)
        state = optimizer.optimizer.state.get(fp32, {})
        if torch.is_tensor(state.get("step")):
            state["step"] = state["step"].clone()


def _available(p: nn.Parameter) -> bool:
    """A ZeRO-3 parameter whose full data is present (any non-ZeRO parameter is)."""
    status = getattr(p, "ds_status", None)
    return status is None or status.name == "AVAILABLE"


def _context_depth(p: nn.Parameter) -> int:
    """How many deepspeed.zero.GatheredParameters contexts hold `p` (DeepSpeed 0.19 records it on the parameter)."""
    return int(getattr(p, "_ds_z3_gathered_param_context_depth", 0))
