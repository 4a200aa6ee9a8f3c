"""PPO baseline (loss.name=ppo) in the online UNA harness: same engine, reward model, prompts, batch sizes, logs.

    una-hpc train configs/online_ppo.yaml

Per rollout batch: old / reference per-token logps (one fused-kernel pass) and critic values -> KL-shaped rewards
-> GAE -> `ppo.epochs` optimizer steps of clipped surrogate (policy) + clipped value loss (critic). The critic is a
second model with the policy's architecture and its own engine: the memory and time PPO pays over online UNA.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..config import Config
from ..data.packing import unpacked
from ..feedback import IGNORE_INDEX
from ..losses import PPOLoss, ppo_policy_loss, ppo_value_loss
from ..models.value import ValueModel
from ..parallel import build_engine
from .online_common import OnlineHarness, rollouts_to_examples
from .sampler import micro_batches
from .step import token_logps


def _ppo_cfg(cfg: Config) -> Config:
    """Both engines take ppo.epochs optimizer steps per rollout batch: stretch their LR schedule accordingly."""
    trainer = dataclasses.replace(cfg.trainer, max_steps=cfg.trainer.max_steps * cfg.ppo.epochs)
    return dataclasses.replace(cfg, trainer=trainer)


def _critic_values(critic_engine, batch) -> torch.Tensor:
    with critic_engine.autocast():
        return critic_engine(input_ids=batch.input_ids, attention_mask=(~batch.pad_mask).long())


def train(cfg: Config) -> Path:
    harness = OnlineHarness.open(cfg)
    run, pair = harness.run, harness.run.pair
    ppo_cfg = _ppo_cfg(cfg)
    critic_engine = build_engine(ValueModel.from_pretrained(run.inputs.model_path).to(run.device), ppo_cfg)
    run.extra_engines["critic"] = critic_engine
    harness.start(engine=build_engine(pair.policy, ppo_cfg))
    engine, pad_id = run.engine, run.tokenizer.pad_token_id
    loss_fn = PPOLoss.from_config(cfg.ppo)

    def update(step, mine, rollouts, scores) -> dict:
        examples = rollouts_to_examples(rollouts, torch.zeros(len(rollouts)))
        full = unpacked(examples, pad_id).to(run.device)  # one rollout per row, one width
        mask = (full.labels != IGNORE_INDEX).float()
        chunks = micro_batches(list(range(len(examples))), cfg.trainer.micro_batch_size)
        with torch.no_grad():  # old / reference logps and values, then GAE over the whole rollout batch
            parts = [token_logps(engine, pair, full.select_rows(c), with_ref=True) for c in chunks]
            old_logp = torch.cat([p[0] for p in parts])
            ref_logp = torch.cat([p[1] for p in parts])
            old_values = torch.cat([_critic_values(critic_engine, full.select_rows(c)) for c in chunks])
            targets = loss_fn.targets(old_logp, ref_logp, old_values, mask, scores)
        token_count = engine.sum_over_dp({"t": float(mask.sum())})["t"]
        stats: dict[str, float] = {}
        for _ in range(cfg.ppo.epochs):
            for c in chunks:
                batch, m = full.select_rows(c), mask[c]
                # Two models, two disjoint graphs: each engine back-propagates its own loss.
                logp, _ = token_logps(engine, pair, batch)
                pg, pg_stats = ppo_policy_loss(
                    logp, old_logp[c], targets.advantages[c], m, loss_fn.clip_range, token_count
                )
                engine.backward(pg)
                values = _critic_values(critic_engine, batch)
                vf, vf_stats = ppo_value_loss(
                    values, old_values[c], targets.returns[c], m, loss_fn.clip_range_value, token_count
                )
                critic_engine.backward(loss_fn.vf_coef * vf)
                # Losses are sums over micro-batches (global token normalizer); ratios are per-batch means.
                for k, v in {"policy_loss": pg, "value_loss": vf}.items():
                    stats[k] = stats.get(k, 0.0) + float(v) / cfg.ppo.epochs
                for k, v in {**pg_stats, **vf_stats}.items():
                    stats[k] = stats.get(k, 0.0) + float(v.mean()) / (len(chunks) * cfg.ppo.epochs)
            step_info = engine.step()
            critic_engine.step()
        return {
            "loss": stats["policy_loss"] + loss_fn.vf_coef * stats["value_loss"],
            **stats,
            **step_info,
            "rm_reward": scores.mean().item(),
            "kl": (targets.kl * mask).sum(-1).mean().item(),
            "tokens": full.num_tokens * cfg.ppo.epochs,
        }

    return harness.train(update)
