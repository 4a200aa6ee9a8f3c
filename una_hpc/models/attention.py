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
    unit_ids: Tensor | None
    branch_ids: Tensor | None


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


def prompt_sharing_refusal(config, attn_impl: str, max_length: int) -> str | None:
    """Why sequences cannot share one copy of their prompt on this model, or None when they can."""
    if attn_impl not in ("sdpa", "eager"):
        return f"{attn_impl} attention takes no custom mask"
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(text, "sliding_window", None)
    if window and getattr(text, "use_sliding_window", True) is not False and window < max_length:
        return f"its sliding window ({window}) is shorter than trainer.max_length ({max_length})"
    return None


def shared_prompt_mask(unit_ids: Tensor, branch_ids: Tensor, attn_impl: str) -> Tensor:
    """[R, 1, L, L] mask: causal inside a unit, and a branch sees the unit's shared prefix (branch 0) and itself."""
    length = unit_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=unit_ids.device).tril_()
    same_unit = unit_ids.unsqueeze(2) == unit_ids.unsqueeze(1)
    visible = (branch_ids.unsqueeze(1) == 0) | (branch_ids.unsqueeze(2) == branch_ids.unsqueeze(1))
    allowed = (same_unit & visible & causal).unsqueeze(1)
    if attn_impl == "sdpa":
        return allowed
    if attn_impl == "eager":  # added to the scores
        return torch.zeros(allowed.shape, device=allowed.device).masked_fill_(~allowed, torch.finfo(torch.float32).min)
    raise ValueError(f"shared prompts need sdpa or eager attention, not {attn_impl}")


def packed_forward_kwargs(batch: PackedRows, attn_impl: str) -> dict:
    """Keyword arguments for an HF decoder forward over packed rows (see the module docstring)."""
    if batch.unit_ids is not None:
        mask = shared_prompt_mask(batch.unit_ids, batch.branch_ids, attn_impl)
        return {"input_ids": batch.input_ids, "position_ids": batch.position_ids, "attention_mask": mask}
    if attn_impl == "flash_attention_2":
        return {"input_ids": batch.input_ids.reshape(1, -1), "position_ids": batch.position_ids.reshape(1, -1)}
    return {"input_ids": batch.input_ids, "position_ids": batch.position_ids}
