"""Reference logps computed once (batched, no grad) and cached by dataset fingerprint and reference-model hash.

With the cache the training step runs the kernel for the policy only and, for full fine-tuning, no reference copy
of the model is held at all: the table is computed from the policy's initial weights before the first step and
before a resume loads a checkpoint (the reference *is* the initial policy), or from model.ref_path when set; with
LoRA from the adapter-disabled model (the fingerprint skips the adapter, so a resume hits the same key).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch
import torch.distributed as tdist
from torch import Tensor

from ..config import Config
from ..data.packing import collate
from ..data.ref_cache import RefLogpCache, dataset_fingerprint, model_fingerprint, split_by_example
from ..kernels import operand_dtype, seq_logps
from ..models.output_head import output_head, verify_output_head
from ..models.policy import PolicyPair, decoder_hidden, load_causal_lm
from .sampler import micro_batches


@torch.no_grad()
def _compute(
    model, attn_impl: str, data, pad_id: int, cfg: Config, device, chunk: int, share_prompt: bool
) -> dict[int, Tensor]:
    was_training = model.training
    model.eval()
    values: dict[int, Tensor] = {}
    # The same compute dtype as training, so that policy == reference gives r = 0 at step 0 under bf16 too.
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if cfg.trainer.dtype == "bfloat16"
        else contextlib.nullcontext()
    )
    for idx in micro_batches(list(range(len(data))), chunk):
        row_length = cfg.data.row_length(cfg.trainer.max_length)
        batch = collate([data[i] for i in idx], pad_id, row_length=row_length, share_prompt=share_prompt).to(device)
        with autocast:
            hidden = decoder_hidden(model, batch, attn_impl)
        head = output_head(model)
        logps, _ = seq_logps(
            hidden.to(operand_dtype(head.weight, autocast)),  # as the training step: r = 0 at step 0
            head.weight,
            batch.labels.reshape(-1),
            batch.seq_index.reshape(-1),
            batch.num_seqs,
            bias=_cast(head.bias, operand_dtype(head.weight, autocast)),  # the engine casts it to hidden's dtype
            scale=head.scale,
            softcap=head.softcap,
        )
        values.update(split_by_example(batch, logps))
    model.train(was_training)
    return values


def _cast(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if t is None else t.to(dtype)


def _gather(part: dict[int, Tensor], world_size: int) -> dict[int, Tensor]:
    if world_size == 1:
        return part
    parts: list = [None] * world_size
    tdist.all_gather_object(parts, part)
    return {k: v for p in parts for k, v in p.items()}


def reference_logps(
    pair: PolicyPair, data, cfg: Config, model_path: Path, dist, device, pad_id: int, share_prompt: bool = False
) -> RefLogpCache:
    """Every rank computes its shard of the table (rows laid out as training lays them out: `share_prompt`); every
    rank returns the whole, loaded cache."""
    ref_model = load_causal_lm(cfg.model.ref_path, pair.attn_impl).to(device) if cfg.model.ref_path else None
    if ref_model is not None:
        verify_output_head(ref_model)
    fingerprint = model_fingerprint(ref_model if ref_model is not None else pair.policy, skip=("lora_",))
    cache = RefLogpCache(
        Path(cfg.data.cache_dir) / "ref_logps",
        dataset_fingerprint(data),
        fingerprint,
        extra=f"{cfg.model.ref_path or model_path}|{cfg.trainer.max_length}|{cfg.trainer.dtype}|{pair.attn_impl}"
        + ("|shared-prompt" if share_prompt else ""),  # equal up to float rounding, but a resume stays bit-exact
    )
    if cache.load() is not None:
        if dist.rank == 0:
            print(f"reference logps: cache hit {cache.path}")
        return cache
    mine = data[dist.rank :: dist.world_size]
    start = time.perf_counter()
    if ref_model is not None:
        scope = contextlib.nullcontext(ref_model)
    else:  # LoRA: adapter off; full fine-tuning: the untouched initial policy
        scope = pair.reference() if pair.lora else contextlib.nullcontext(pair.policy)
    with scope as model:
        # trainer.micro_batch_size examples per forward, as in training; 0 = a rank's share of a batch
        chunk = cfg.trainer.micro_batch_size or max(cfg.trainer.batch_size // dist.world_size, 1)
        part = _compute(model, pair.attn_impl, mine, pad_id, cfg, device, chunk, share_prompt)
    values = _gather(part, dist.world_size)
    if dist.rank == 0:
        cache.save(values)
        seconds = time.perf_counter() - start
        print(f"reference logps: computed for {len(values)} examples in {seconds:.1f} s -> {cache.path}")
    if dist.world_size > 1:
        tdist.barrier()
    cache.load()
    return cache
