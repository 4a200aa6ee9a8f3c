"""Attention backend choice and the inputs that make packed rows attend block-diagonally.

- flash_attention_2 (flash_attn installed, CUDA): rows are flattened to one [1, R*L] row and transformers derives
  cu_seqlens from the restarting position_ids (flash_attn varlen); no mask tensor at all.
- sdpa / eager: an explicit [R, 1, L, L] mask, causal within a sequence and closed across sequences and padding.
  transformers passes a 4-D mask through unchanged; SDPA takes a boolean (True = attend), eager an additive one.
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

    def segment_ids(self) -> Tensor: ...


def resolve_attn_implementation(requested: str, device: torch.device) -> str:
    if requested != "auto":
        if requested == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            raise ValueError("model.attn_implementation=flash_attention_2 but flash_attn is not installed "
                             "(pip install una-hpc[gpu]); use auto or sdpa")
        return requested
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def block_causal_mask(segment_ids: Tensor) -> Tensor:
    """[R, L] sequence ids (-1 = padding) -> [R, 1, L, L] bool: query t sees key s iff same sequence and s <= t.

    Padding rows attend to themselves only, so no softmax row is empty (an all-False row gives NaN in SDPA).
    """
    r, n = segment_ids.shape
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    causal = torch.ones(n, n, dtype=torch.bool, device=segment_ids.device).tril()
    mask = same & causal
    mask |= torch.eye(n, dtype=torch.bool, device=segment_ids.device)
    return mask[:, None]


def packed_forward_kwargs(input_ids: Tensor, position_ids: Tensor, segment_ids: Tensor, attn_impl: str,
                          dtype: torch.dtype) -> dict:
    """Keyword arguments for an HF decoder forward over packed rows."""
    if attn_impl == "flash_attention_2":
        return {"input_ids": input_ids.reshape(1, -1), "position_ids": position_ids.reshape(1, -1)}
    mask = block_causal_mask(segment_ids)
    if attn_impl == "eager":
        mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    return {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": mask}
