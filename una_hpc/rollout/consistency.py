"""Trainer-side log-probabilities of rollouts, and their drift from the engine's: the stale-weights detector.

    logps = rollout_logps(policy, rollouts)          # [N] float32, seq_logps over each completion
    drift = max_logprob_drift(rollouts, logps)       # max |engine sum - trainer sum| over sequences

After a correct weight sync the two agree to float rounding (fp32 tiny model: ~1e-6 per token); a stale engine, a
wrong name mapping or an unmerged LoRA shows up as a drift of whole nats. The online trainer can log the drift
every step (cheap: it reuses the forward it needs anyway) to catch a silently broken sync.

Tested by: .venv/bin/python -m pytest tests/unit/test_rollout_hf.py tests/integration/test_vllm_sync.py -q
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..feedback import IGNORE_INDEX
from ..kernels import seq_logps
from ..models.output_head import output_head
from .base import Rollout
from .weights import unwrap_hf_model


@torch.no_grad()
def rollout_logps(
    model: nn.Module, rollouts: Sequence[Rollout], *, batch_size: int = 16, backend: str = "auto", pad_token_id: int = 0
) -> Tensor:
    """Per-rollout sum over completion tokens of log softmax(logits)[token], computed by the trainer's kernel.

    `model` is the policy as trained (PEFT adapters active, DeepSpeed/DDP wrappers allowed); it runs in eval mode
    on right-padded rows (real tokens keep positions 0..L-1), and is put back in its previous mode.
    """
    lm = unwrap_hf_model(model)
    decoder, head = lm.get_decoder(), output_head(lm)
    device = head.weight.device
    was_training = model.training
    model.eval()
    out: list[Tensor] = []
    try:
        for start in range(0, len(rollouts), batch_size):
            chunk = rollouts[start : start + batch_size]
            width = max(len(r.prompt_ids) + len(r.completion_ids) for r in chunk)
            input_ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
            attention_mask = torch.zeros_like(input_ids)
            labels = torch.full_like(input_ids, IGNORE_INDEX)
            for b, r in enumerate(chunk):
                p, c = len(r.prompt_ids), len(r.completion_ids)
                input_ids[b, : p + c] = torch.tensor(r.prompt_ids + r.completion_ids)
                attention_mask[b, : p + c] = 1
                labels[b, p - 1 : p - 1 + c] = torch.tensor(r.completion_ids, dtype=torch.long)
            hidden = decoder(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), use_cache=False
            ).last_hidden_state
            seq_index = torch.arange(len(chunk)).repeat_interleave(width)
            logps, _ = seq_logps(
                hidden.reshape(-1, hidden.shape[-1]),
                head.weight,
                labels.reshape(-1).to(device),
                seq_index.to(device),
                len(chunk),
                backend=backend,
                **head.transform(),
            )
            out.append(logps.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def max_logprob_drift(rollouts: Sequence[Rollout], trainer_logps: Tensor) -> float:
    """max over rollouts of |engine logprob sum - trainer logprob sum| (nats)."""
    if len(rollouts) != trainer_logps.numel():
        raise ValueError(f"{len(rollouts)} rollouts but {trainer_logps.numel()} trainer logps")
    engine = torch.tensor([r.logprob_sum for r in rollouts], dtype=torch.float64)
    return float((engine - trainer_logps.double().cpu()).abs().max()) if len(rollouts) else 0.0
