"""Argument checks shared by the loss functions: every problem is a one-line ValueError."""
from __future__ import annotations

import torch
from torch import Tensor


def as_fp32(name: str, x: Tensor) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {type(x).__name__}"
                         f"{'' if not isinstance(x, Tensor) else ' of ' + str(x.dtype)}")
    if x.dim() != 1:
        raise ValueError(f"{name} must be 1-D (one value per sequence), got shape {tuple(x.shape)}")
    return x.float()


def same_shape(**tensors: Tensor) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError("shape mismatch: " + ", ".join(f"{k}{list(s)}" for k, s in shapes.items()))


def check_beta(beta: float) -> None:
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")


def check_unit_interval(name: str, x: Tensor) -> None:
    if x.numel() and (torch.isnan(x).any() or x.min() < 0 or x.max() > 1):
        raise ValueError(f"{name} must lie in [0, 1], got values in [{x.min().item():.4g}, {x.max().item():.4g}]")


def check_binary(name: str, x: Tensor) -> None:
    if x.numel() and not torch.all((x == 0) | (x == 1)):
        bad = x[(x != 0) & (x != 1)][0].item()
        raise ValueError(f"{name} must be 0 or 1, got {bad:.4g}")
