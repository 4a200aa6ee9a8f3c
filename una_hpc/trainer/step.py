"""One optimizer step on packed micro-batches: the part the offline and online loops share.

    hidden = decoder(policy, batch)                      # no logits
    logps, ref_logps = seq_logps(hidden, lm_head.weight, labels, seq_index, S, ref_hidden=..., ref_weight=...)
    head(logps, ref_logps, targets) -> per-type loss sums -> / global counts -> engine.backward

Gradient accumulation uses a global normalizer: each micro-batch's loss sum is divided by the example counts of the
whole optimizer step (over all data-parallel ranks), so any micro-batch split gives the same loss and gradients.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..config import Config
from ..data.batch import PackedBatch
from ..kernels import seq_logps
from ..losses import LossHead
from ..models.policy import PolicyPair, decoder_hidden, lm_head_weight


def _autocast(dtype: str, device: torch.device):
    if dtype == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def compute_logps(pair: PolicyPair, batch: PackedBatch, *, dtype: str = "float32",
                  gather=contextlib.nullcontext, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """Policy logps (with grad) and reference logps (cached, or computed in the kernel's same pass)."""
    device = batch.input_ids.device
    with _autocast(dtype, device):
        hidden = decoder_hidden(pair.policy, batch, pair.attn_impl)
    ref_hidden = ref_weight = None
    if batch.ref_logps is None:
        with _autocast(dtype, device):
            ref_hidden, ref_weight = pair.ref_hidden_and_weight(batch)
    labels, seq_index = batch.labels.reshape(-1), batch.seq_index.reshape(-1)
    weight = lm_head_weight(pair.policy)
    with gather([weight]):  # ZeRO-3: the lm_head is gathered only around the kernel call
        w = weight.to(hidden.dtype)
        if ref_weight is not None:
            # Same tensor object => the kernel loads each W tile once for both (LoRA: adapter off, same lm_head).
            ref_weight = w if ref_weight is weight else ref_weight.to(hidden.dtype)
            ref_hidden = ref_hidden.to(hidden.dtype)
        logps, ref = seq_logps(hidden, w, labels, seq_index, batch.num_seqs,
                               ref_hidden=ref_hidden, ref_weight=ref_weight, backend=backend)
    return logps, (batch.ref_logps if ref is None else ref)


@dataclass
class StepStats:
    """What one optimizer step reports (summed over micro-batches; means over examples)."""

    loss: float = 0.0
    tokens: int = 0
    type_loss_sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    type_counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    metric_values: dict[str, list[Tensor]] = field(default_factory=lambda: defaultdict(list))

    def as_row(self) -> dict:
        row = {"loss": self.loss}
        for t, s in self.type_loss_sums.items():
            row[f"loss_{t}"] = s / max(self.type_counts[t], 1)
        for name, parts in self.metric_values.items():
            v = torch.cat(parts).float()
            if v.numel():
                row[{"implicit_reward": "reward_mean"}.get(name, name)] = v.mean().item()
        if "implicit_reward" in self.metric_values:
            row["reward_std"] = torch.cat(self.metric_values["implicit_reward"]).float().std(unbiased=False).item()
        return row


def train_step(engine, pair: PolicyPair, head: LossHead, batches: list[PackedBatch], global_counts: dict[str, int],
               cfg: Config) -> dict:
    """Forward + backward on every micro-batch, then one optimizer step. Returns the step's metrics row."""
    stats = StepStats()
    gather = getattr(engine, "gathered_params", None) or (lambda params: contextlib.nullcontext())
    for batch in batches:
        logps, ref = compute_logps(pair, batch, dtype=cfg.trainer.dtype, gather=gather)
        out = head(logps, ref, batch.targets, cfg.loss)
        loss = head.loss(out, global_counts, cfg.loss)
        engine.backward(loss)
        stats.loss += loss.item()
        stats.tokens += batch.num_tokens
        for t, s in out.loss_sums.items():
            stats.type_loss_sums[t] += s.item()
            stats.type_counts[t] += out.counts[t]
        for k, v in out.metrics.items():
            stats.metric_values[k].append(v.detach().cpu())
    step_info = engine.step()
    return {**stats.as_row(), **step_info, "tokens": stats.tokens}
