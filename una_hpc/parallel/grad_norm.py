"""Global gradient norm over parameters that may be tensor-parallel shards.

A parameter DeepSpeed AutoTP sharded carries `tensor_model_parallel = True`: its squared norm is summed over the
TP group; replicated parameters hold the same gradient on every TP rank and count once. Call after data-parallel
reduction. Tested by: tests/distributed/test_deepspeed_engine.py (TP scenario, grad norms equal single process)
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn


def is_tp_sharded(p: nn.Parameter) -> bool:
    return bool(getattr(p, "tensor_model_parallel", False))


def global_grad_norm(params: Iterable[nn.Parameter], tp_group=None) -> float:
    params = list(params)
    sharded = torch.zeros((), dtype=torch.float64)
    replicated = torch.zeros((), dtype=torch.float64)
    for p in params:
        if p.grad is None:
            continue
        sq = p.grad.detach().double().pow(2).sum().cpu()
        if is_tp_sharded(p):
            sharded += sq
        else:
            replicated += sq
    if tp_group is not None and dist.get_world_size(tp_group) > 1:
        device = next((p.grad.device for p in params if p.grad is not None), sharded.device)
        sharded = sharded.to(device)  # NCCL only reduces device tensors
        dist.all_reduce(sharded, group=tp_group)
        sharded = sharded.cpu()
    return math.sqrt(float(sharded + replicated))
