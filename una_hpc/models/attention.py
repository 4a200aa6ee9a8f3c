"""Attention backend choice and the inputs that make packed rows attend block-diagonally.

- flash_attention_2 (flash_attn installed, CUDA): rows are flattened to one [1, R*L] row and transformers derives
  cu_seqlens from the restarting position_ids (flash_attn varlen); no mask tensor at all.
- sdpa / eager: no mask tensor either. transformers (masking_utils) finds the packed sequences itself from the
  restarting position_ids (padding has position 0, so each pad token is a sequence of its own) and builds each
  layer's mask: causal, closed across sequences, and windowed on sliding-window layers (Mistral, Gemma-2/3). An
  explicit 4-D mask would be used as-is on every layer, silently dropping the window (measured: 0.4-1.5 nats per
  sequence off with a window of 4; tests/unit/test_architectures.py).
"""

from __future__ import annotations

import importlib.util
from typing import Protocol

import torch
from torch import Tensor


class PackedRows(Protocol):
    """What the model layer needs of a packed batch (una_hpc.data.batch.PackedBatch satisfies it; models sits
    below data and does not import it)."""

    input_ids: Tensor
    position_ids: Tensor


def resolve_attn_implementation(requested: str, device: torch.device) -> str:
    if requested != "auto":
        if requested == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            raise ValueError(
                "model.attn_implementation=flash_attention_2 but flash_attn is not installed "
                "(pip install una-hpc[gpu]); use auto or sdpa"
            )
        return requested
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def packed_forward_kwargs(input_ids: Tensor, position_ids: Tensor, attn_impl: str) -> dict:
    """Keyword arguments for an HF decoder forward over packed rows (see the module docstring)."""
    if attn_impl == "flash_attention_2":
        return {"input_ids": input_ids.reshape(1, -1), "position_ids": position_ids.reshape(1, -1)}
    return {"input_ids": input_ids, "position_ids": position_ids}
