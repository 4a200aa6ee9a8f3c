"""Argument checks shared by the loss functions: every problem is a one-line ValueError."""

from __future__ import annotations

import torch
from torch import Tensor

SHAPES = {1: "1-D (one value per sequence)", 2: "2-D [batch, tokens]"}
"""What a loss input of each rank holds: per-sequence values (UNA family) or per-token values (PPO)."""


def as_fp32(name: str, x: Tensor, ndim: int = 1) -> Tensor:
    """`x` as fp32 after checking it is a floating-point tensor of `ndim` dimensions (see SHAPES)."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point tensor, got {type(x).__name__}"
            f"{'' if not isinstance(x, Tensor) else ' of ' + str(x.dtype)}"
        )
    if x.dim() != ndim:
        raise ValueError(f"{name} must be {SHAPES[ndim]}, got shape {tuple(x.shape)}")
    return x.float()


def same_shape(**tensors: Tensor) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError("shape mismatch: " + ", ".join(f"{k}{list(s)}" for k, s in shapes.items()))


def check_non_negative(name: str, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


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
