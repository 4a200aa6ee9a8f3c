"""Tensor-parallel communication as small autograd Functions (Megatron's mappings), kept apart from the math.

    x = copy_to_region(x, group)        # forward: identity        backward: all-reduce SUM of the gradient
    y = reduce_from_region(y, group)    # forward: all-reduce SUM  backward: identity
    all_reduce_max_(t, group)           # statistics only, outside autograd
    all_reduce_sum_(t, group)           # statistics only, outside autograd

Every function takes the process group explicitly. Tested by: tests/distributed/test_vocab_parallel.py
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def _world(group) -> int:
    return 1 if group is None else dist.get_world_size(group)


class _IdentityForwardAllReduceBackward(torch.autograd.Function):
    """Enter a tensor-parallel region: each rank's partial input gradient is summed over the group."""

    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


class _AllReduceSumForwardIdentityBackward(torch.autograd.Function):
    """Leave a tensor-parallel region: partial results are summed; every rank's output gradient is already whole."""

    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:
        out = x.contiguous().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


def copy_to_region(x: Tensor, group) -> Tensor:
    return x if _world(group) == 1 else _IdentityForwardAllReduceBackward.apply(x, group)


def reduce_from_region(x: Tensor, group) -> Tensor:
    return x if _world(group) == 1 else _AllReduceSumForwardIdentityBackward.apply(x, group)


@torch.no_grad()
def all_reduce_max_(t: Tensor, group) -> Tensor:
    """In-place elementwise MAX over the group (a statistic: carries no gradient)."""
    if _world(group) > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return t


@torch.no_grad()
def all_reduce_sum_(t: Tensor, group) -> Tensor:
    """In-place elementwise SUM over the group, outside autograd (inside a Function that owns its backward)."""
    if _world(group) > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t
