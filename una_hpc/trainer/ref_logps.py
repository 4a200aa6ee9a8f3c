"""Reference logps computed once (batched, no grad) and cached by dataset fingerprint and reference-model hash.

With the cache the training step runs the kernel for the policy only and, for full fine-tuning, no reference copy
of the model is held at all: the table is computed from the policy's initial weights before the first step (the
reference *is* the initial policy), or from model.ref_path when set; with LoRA from the adapter-disabled model.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..config import Config
from ..data.batch import PackedBatch
from ..data.packing import collate
from ..data.ref_cache import RefLogpCache, dataset_fingerprint, model_fingerprint
from ..kernels import seq_logps
from ..losses import PAIR_REJECTED
from ..models.policy import PolicyPair, decoder_hidden, lm_head_weight, load_causal_lm
from .sampler import micro_batches


@dataclass
class RefTable:
    values: dict[int, Tensor]
    """example_id -> [sequences of the example] fp32 reference logps (pairs: chosen, rejected)."""

    def for_batch(self, batch: PackedBatch) -> Tensor:
        seq_no = (batch.targets.kind == PAIR_REJECTED).long().tolist()
        return torch.stack([self.values[e][k] for e, k in zip(batch.example_ids.tolist(), seq_no)])


@torch.no_grad()
def _compute(model, attn_impl: str, data, pad_id: int, cfg: Config, device) -> dict[int, Tensor]:
    model.eval()
    found: dict[int, dict[int, float]] = {}
    size = cfg.trainer.micro_batch_size or cfg.trainer.batch_size
    for idx in micro_batches(list(range(len(data))), size):
        batch = collate([data[i] for i in idx], pad_id, row_length=cfg.trainer.max_length).to(device)
        hidden = decoder_hidden(model, batch, attn_impl)
        logps, _ = seq_logps(hidden, lm_head_weight(model).to(hidden.dtype), batch.labels.reshape(-1),
                             batch.seq_index.reshape(-1), batch.num_seqs)
        seq_no = (batch.targets.kind == PAIR_REJECTED).long().tolist()
        for s, (e, k) in enumerate(zip(batch.example_ids.tolist(), seq_no)):
            found.setdefault(e, {})[k] = logps[s].item()
    model.train()
    return {e: torch.tensor([seqs[k] for k in sorted(seqs)], dtype=torch.float32) for e, seqs in found.items()}


def reference_logps(pair: PolicyPair, data, cfg: Config, inputs, dist, pad_id: int) -> RefTable:
    """Every rank computes its shard of the table; all ranks get the whole table."""
    ref_source = cfg.model.ref_path or str(inputs.model_path)
    ref_model = load_causal_lm(cfg.model.ref_path, pair.attn_impl).to(dist.device) if cfg.model.ref_path else None
    fp_model = model_fingerprint(ref_model if ref_model is not None else pair.policy) + f":{Path(ref_source).name}"
    cache = RefLogpCache(Path(cfg.data.cache_dir) / "ref_logps", dataset_fingerprint(data), fp_model)
    values = cache.load()
    if values is not None:
        if dist.is_main:
            print(f"reference logps: cache hit ({len(values)} examples)")
        return RefTable(values)
    mine = data[dist.rank::dist.world_size]
    if ref_model is not None:
        part = _compute(ref_model, pair.attn_impl, mine, pad_id, cfg, dist.device)
    else:
        with pair.reference() if pair.lora else contextlib.nullcontext(pair.policy) as model:
            part = _compute(model, pair.attn_impl, mine, pad_id, cfg, dist.device)
    values = dist.gather_dicts(part)
    if dist.is_main:
        cache.save(values)
        print(f"reference logps: computed for {len(values)} examples, cached in {cache.path}")
    return RefTable(values)

