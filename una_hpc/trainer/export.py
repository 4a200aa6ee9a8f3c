"""Export the trained policy as a plain HF model dir (LoRA merged) that transformers and vLLM load."""

from __future__ import annotations

from pathlib import Path

from ..models.lora import hf_state_dict
from ..models.policy import PolicyPair, base_causal_lm


def export_hf_model(engine, pair: PolicyPair, tokenizer, out_dir: str | Path) -> None:
    """All ranks call this (gathering ZeRO-3 partitions / TP shards is collective); rank 0 writes."""
    state = engine.consolidated_state_dict()
    if not engine.is_main:
        return
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = hf_state_dict(pair.policy, state)
    lm = base_causal_lm(pair.policy)
    lm.save_pretrained(str(out), state_dict={k: v.detach().cpu().contiguous() for k, v in weights.items()})
    tokenizer.save_pretrained(str(out))
