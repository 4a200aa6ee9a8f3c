"""One optimizer step on packed micro-batches: the part the offline and online loops share.

    hidden = engine.hidden_states(packed rows)           # the HF forward with no logits
    logps, ref_logps = engine.seq_logps(hidden, labels, seq_index, S, ref_hidden=..., ref_weight=...)
    head(logps, ref_logps, targets) -> per-type loss sums -> / global counts -> engine.backward

Gradient accumulation uses a global normalizer: each micro-batch's loss sum is divided by the example counts of the
whole optimizer step (over all data-parallel ranks), so any micro-batch split gives the same loss and gradients.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..config import Config
from ..data.batch import PackedBatch
from ..kernels import operand_dtype
from ..losses import HeadOutput, LossHead
from ..models.attention import packed_forward_kwargs, prompt_sharing_refusal
from ..models.output_head import base_causal_lm
from ..models.policy import PolicyPair


def shared_prompts(cfg: Config, pair: PolicyPair, loud: bool) -> bool:
    """data.share_prompt, unless this model's attention cannot take the mask it needs (one printed line why)."""
    if not cfg.data.share_prompt:
        return False
    why = prompt_sharing_refusal(base_causal_lm(pair.policy).config, pair.attn_impl, cfg.trainer.max_length)
    if why is not None and loud:
        print(f"data.share_prompt: off for this model, {why}: every sequence keeps its own copy of its prompt")
    return why is None


def policy_hidden(engine, pair: PolicyPair, batch: PackedBatch) -> Tensor:
    """Policy hidden states through the engine's forward (DeepSpeed bookkeeping, autocast), no logits."""
    kwargs = packed_forward_kwargs(batch, pair.attn_impl)
    with engine.autocast():
        return engine.hidden_states(**kwargs)


def kernel_logps(
    engine, pair: PolicyPair, batch: PackedBatch, seq_index: Tensor, num_seqs: int, with_ref: bool
) -> tuple[Tensor, Tensor | None]:
    """Policy logps summed by `seq_index` (grad), plus the reference's from the kernel's same pass when asked.

    The logits transform (bias, scale, softcap) is the model's own, read by `engine.output_head()`."""
    hidden = policy_hidden(engine, pair, batch)
    weight = engine.output_weight()
    ref_hidden = ref_weight = ref_bias = None
    if with_ref:
        with engine.autocast():
            ref_hidden, ref_head = pair.ref_hidden_and_head(batch)
        ref_hidden = ref_hidden.to(operand_dtype(weight, engine.autocast()))  # bf16 on CUDA: tensor cores
        # Same tensor object => the kernel loads each W tile once for both (LoRA with the adapter off).
        if ref_head.weight is not weight:
            ref_weight = ref_head.weight.to(weight.dtype)
            ref_bias = ref_head.bias
    return engine.seq_logps(
        hidden.to(operand_dtype(weight, engine.autocast())),
        batch.labels.reshape(-1),
        seq_index.reshape(-1),
        num_seqs,
        ref_hidden=ref_hidden,
        ref_weight=ref_weight,
        ref_bias=ref_bias,
    )


def logratio_base(head: LossHead, cfg: Config, logps: Tensor, ref_logps: Tensor) -> Tensor:
    """What the implicit reward's log-ratio is taken against: the reference's logps, or with
    loss.online_logratio=rollout (online UNA) the policy that sampled the batch. One optimizer step per rollout
    batch makes that policy the one in this forward, so its logps, detached, are exactly the rollout-time ones."""
    if head.loop == "online" and cfg.loss.online_logratio == "rollout":
        return logps.detach()
    return ref_logps


def logps_and_loss(
    engine, pair: PolicyPair, head: LossHead, batch: PackedBatch, global_counts: dict[str, int], cfg: Config
) -> tuple[Tensor, HeadOutput]:
    """Policy logps (reference from the cache or the kernel's same pass) -> the head's globally normalized loss."""
    logps, ref = kernel_logps(engine, pair, batch, batch.seq_index, batch.num_seqs, with_ref=batch.ref_logps is None)
    ref = logratio_base(head, cfg, logps, batch.ref_logps if ref is None else ref)
    out = head(logps, ref, batch.targets, cfg.loss)
    return head.loss(out, global_counts, cfg.loss), out


def token_logps(
    engine, pair: PolicyPair, batch: PackedBatch, *, with_ref: bool = False
) -> tuple[Tensor, Tensor | None]:
    """Per-token logps [R, L] (0 off the label mask) from the same fused kernel: every labelled token is its own
    "sequence", so PPO's token-level ratios never materialize [T, V] logits either."""
    token_index = torch.arange(batch.labels.numel(), device=batch.labels.device)
    logps, ref = kernel_logps(engine, pair, batch, token_index, batch.labels.numel(), with_ref)
    shape = batch.labels.shape
    return logps.reshape(shape), None if ref is None else ref.reshape(shape)


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


def train_step(
    engine, pair: PolicyPair, head: LossHead, batches: list[PackedBatch], global_counts: dict[str, int], cfg: Config
) -> dict:
    """Forward + backward on every micro-batch, then one optimizer step. Returns the step's metrics row."""
    stats = StepStats()
    for batch in batches:
        loss, out = logps_and_loss(engine, pair, head, batch, global_counts, cfg)
        engine.backward(loss)  # under ZeRO-3, seq_logps gathered the lm_head and backward releases it
        stats.loss += loss.item()
        stats.tokens += batch.num_tokens
        for t, s in out.loss_sums.items():
            stats.type_loss_sums[t] += s.item()
            stats.type_counts[t] += out.counts[t]
        for k, v in out.metrics.items():
            stats.metric_values[k].append(v.detach().cpu())
    step_info = engine.step()
    return {**stats.as_row(), **step_info, "tokens": stats.tokens}


def reduce_row(row: dict, engine, sum_keys: tuple[str, ...] = ("loss", "tokens")) -> dict:
    """Sum `sum_keys` (each rank's share of a globally normalized loss, token counts) over data-parallel ranks,
    average the other metrics (logging only)."""
    if engine.dp_world_size == 1:
        return row
    summed = engine.sum_over_dp({k: float(v) for k, v in row.items() if isinstance(v, (int, float))})
    already_global = {"grad_norm", "lr"}
    return {
        **row,
        **{
            k: v if k in sum_keys else row[k] if k in already_global else v / engine.dp_world_size
            for k, v in summed.items()
        },
    }
