"""Turn a live engine or a saved checkpoint into a plain HF model directory (transformers and vLLM load it as is).

    consolidate_to_hf(engine, "runs/x/final", model_config_dir)              # collective: every rank calls it
    consolidate_to_hf("runs/x/checkpoints/step_100", "runs/x/hf", model_config_dir)   # offline, one process

Sources: LocalEngine checkpoints; DeepSpeed ZeRO-1/2/3 checkpoints (fp32 master weights via DeepSpeed's
zero_to_fp32); DeepSpeed AutoTP checkpoints with ZeRO-0..2 (per-TP-rank shards concatenated along the dimension
that differs from the unsharded shape recorded at save time). A PEFT model's LoRA factors are merged
(W + scale * B @ A) and its names mapped back to the base model's. Config, generation config and tokenizer files are
copied from `model_config_dir`; weights are written as (sharded) safetensors. Tested by:
tests/distributed/test_deepspeed_engine.py (ZeRO-3 and TP round trips) and test_local_engine.py (LoRA merge)
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch
from torch import Tensor

from ..models.lora import LORA_A_KEY, PEFT_PREFIX, merge_lora_state_dict
from .checkpoint import read_meta, safe_load, staged_dir
from .engine import TrainEngine

WEIGHT_FILE = re.compile(r".*\.(safetensors|bin|pt|pth|ckpt)$|.*\.(safetensors|bin)\.index\.json$")


def merge_lora(state_dict: dict[str, Tensor], lora_scale: float | None) -> dict[str, Tensor]:
    """PEFT names -> base names, LoRA merged into its base layer: W = W0 + lora_scale * B @ A (scale = alpha / r)."""
    if not any(k.startswith(PEFT_PREFIX) for k in state_dict):
        return state_dict
    if lora_scale is None and any(LORA_A_KEY.match(k) for k in state_dict):
        raise ValueError("the state dict holds LoRA factors: pass lora_scale = model.lora_alpha / model.lora_rank")
    return merge_lora_state_dict(state_dict, lora_scale or 0.0)


def _load(path: Path) -> dict:
    return safe_load(path, map_location="cpu")


def merge_tp_shards(shards: list[dict[str, Tensor]], full_shapes: dict[str, list[int]]) -> dict[str, Tensor]:
    """Concatenate per-TP-rank tensors (rank order) along the one dimension where they differ from the full shape."""
    out = {}
    for name, first in shards[0].items():
        full = tuple(full_shapes.get(name, first.shape))
        pieces = [s[name] for s in shards]
        if all(tuple(p.shape) == full for p in pieces):
            out[name] = first
            continue
        dims = {d for p in pieces for d in range(p.dim()) if p.shape[d] != full[d]}
        if len(dims) != 1:
            raise ValueError(
                f"{name}: cannot tell the sharded dimension from shards {[tuple(p.shape) for p in pieces]} of {full}"
            )
        merged = torch.cat(pieces, dim=dims.pop())
        if tuple(merged.shape) != full:
            raise ValueError(f"{name}: shards concatenate to {tuple(merged.shape)}, expected {full}")
        out[name] = merged
    return out


def state_dict_from_checkpoint(directory: str | Path) -> dict[str, Tensor]:
    """Full state dict (module names) from a una-hpc checkpoint dir written by either engine."""
    d = Path(directory)
    meta = read_meta(d)
    if meta["backend"] == "local":
        return _load(d / "model.pt")
    tag_dir = d / meta["tag"]
    if meta["tp_size"] > 1:
        if meta["zero_stage"] == 3:
            raise ValueError(
                f"{d}: a ZeRO-3 + TP checkpoint cannot be consolidated offline; "
                "call consolidate_to_hf(engine, ...) from the running job"
            )
        shards = [_load(tag_dir / f"mp_rank_{r:02d}_model_states.pt")["module"] for r in range(meta["tp_size"])]
        sd = merge_tp_shards(shards, meta["param_shapes"])
    elif meta["zero_stage"] == 0:
        sd = _load(tag_dir / "mp_rank_00_model_states.pt")["module"]
    else:
        from .distributed import ensure_ds_accelerator

        ensure_ds_accelerator()
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        sd = get_fp32_state_dict_from_zero_checkpoint(str(d), tag=meta["tag"])
    dtype = torch.bfloat16 if meta.get("dtype") == "bfloat16" else None
    return {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v) for k, v in sd.items()}


def save_hf_dir(state_dict: dict[str, Tensor], out_dir: str | Path, model_config_dir: str | Path) -> Path:
    """Weights as safetensors + every non-weight file of model_config_dir (config, tokenizer), atomically."""
    from huggingface_hub import save_torch_state_dict

    src = Path(model_config_dir)
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src}: no config.json (model_config_dir must be an HF model dir)")
    with staged_dir(out_dir, is_main=True, barrier=lambda: None) as tmp:
        for f in src.iterdir():
            if f.is_file() and not WEIGHT_FILE.match(f.name):
                shutil.copy2(f, tmp / f.name)
        tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        save_torch_state_dict(tensors, tmp)
    return Path(out_dir)


def consolidate_to_hf(
    source: TrainEngine | str | Path,
    out_dir: str | Path,
    model_config_dir: str | Path,
    *,
    lora_scale: float | None = None,
) -> Path:
    """HF model dir at out_dir from an engine (collective; rank 0 writes) or a checkpoint directory."""
    if isinstance(source, TrainEngine):
        sd = source.consolidated_state_dict()
        if source.is_main:
            save_hf_dir(merge_lora(sd, lora_scale), out_dir, model_config_dir)
        source.barrier()
        return Path(out_dir)
    return save_hf_dir(merge_lora(state_dict_from_checkpoint(source), lora_scale), out_dir, model_config_dir)
