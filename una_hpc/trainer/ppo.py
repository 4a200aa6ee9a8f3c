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
from ..losses import PPOLoss, ppo_policy_loss, ppo_value_loss
from ..models.value import ValueModel
from ..parallel import build_engine
from ..rollout.factory import make_engine
from ..rollout.reward import RewardModel
from ..rollout.weights import policy_weights_for_sync
from .online import rollouts_to_examples
from .online_common import (PhaseTimer, check_online_config, gold_rewards, load_prompts, peak_memory_mb,
                            reward_model_path, sampling_for_step)
from .run import open_run
from .sampler import StepSampler, micro_batches, shard_for_rank
from .step import reduce_row, token_logps


def _ppo_cfg(cfg: Config) -> Config:
    """Both engines take ppo.epochs optimizer steps per rollout batch: stretch their LR schedule accordingly."""
    trainer = dataclasses.replace(cfg.trainer, max_steps=cfg.trainer.max_steps * cfg.ppo.epochs)
    return dataclasses.replace(cfg, trainer=trainer)


def _critic_values(critic_engine, batch) -> torch.Tensor:
    with critic_engine.autocast():
        return critic_engine(input_ids=batch.input_ids, attention_mask=(~batch.pad_mask).long())


def train(cfg: Config) -> Path:
    run = open_run(cfg)
    check_online_config(cfg, run.dist.world_size)
    prompts = load_prompts(cfg, run.inputs.data_path, run.inputs.data_format, run.tokenizer)
    pair = run.load_policy(need_ref=True)
    rm = RewardModel.from_pretrained(reward_model_path(cfg, run.is_main, run.barrier), device=run.device,
                                     max_length=cfg.trainer.max_length)
    critic = ValueModel.from_pretrained(run.inputs.model_path).to(run.device)
    ppo_cfg = _ppo_cfg(cfg)
    critic_engine = build_engine(critic, ppo_cfg)
    run.extra_engines["critic"] = critic_engine
    start = run.start(engine=build_engine(pair.policy, ppo_cfg))
    engine = run.engine
    rollout = make_engine(cfg, engine.module, run.inputs.model_path)
    loss_fn = PPOLoss.from_config(cfg.ppo)
    sampler = StepSampler(len(prompts.ids), cfg.rollout.prompts_per_step, cfg.trainer.seed)
    pad_id = run.tokenizer.pad_token_id
    try:
        for step in range(start, cfg.trainer.max_steps):
            timer = PhaseTimer()
            mine = shard_for_rank(sampler.global_batch(step), engine.dp_rank, engine.dp_world_size)
            with timer.phase("generate"):
                rollouts = rollout.generate([prompts.ids[i] for i in mine], cfg.rollout.samples_per_prompt,
                                            sampling_for_step(cfg, step, engine.dp_rank))
            with timer.phase("score"):
                scores = rm.score_rollouts(rollouts).to(run.device)
            with timer.phase("train"):
                examples = rollouts_to_examples(rollouts, torch.zeros(len(rollouts)))
                full = unpacked(examples, pad_id).to(run.device)  # one rollout per row, one width
                mask = (full.labels != -100).float()
                chunks = micro_batches(list(range(len(examples))), cfg.trainer.micro_batch_size)
                with torch.no_grad():  # old / reference logps and values, then GAE over the whole rollout batch
                    parts = [token_logps(engine, pair, full.select_rows(c), with_ref=True) for c in chunks]
                    old_logp = torch.cat([p[0] for p in parts])
                    ref_logp = torch.cat([p[1] for p in parts])
                    old_values = torch.cat([_critic_values(critic_engine, full.select_rows(c)) for c in chunks])
                    targets = loss_fn.targets(old_logp, ref_logp, old_values, mask, scores)
                token_count = engine.sum_over_dp({"t": float(mask.sum())})["t"]
                sums: dict[str, float] = {}
                for _ in range(cfg.ppo.epochs):
                    for c in chunks:
                        batch, m = full.select_rows(c), mask[c]
                        # Two models, two disjoint graphs: each engine back-propagates its own loss.
                        logp, _ = token_logps(engine, pair, batch)
                        pg, pg_stats = ppo_policy_loss(logp, old_logp[c], targets.advantages[c], m,
                                                       loss_fn.clip_range, token_count)
                        engine.backward(pg)
                        values = _critic_values(critic_engine, batch)
                        vf, vf_stats = ppo_value_loss(values, old_values[c], targets.returns[c], m,
                                                      loss_fn.clip_range_value, token_count)
                        critic_engine.backward(loss_fn.vf_coef * vf)
                        # Losses are sums over micro-batches (global token normalizer); ratios are per-batch means.
                        for k, v in {"policy_loss": pg, "value_loss": vf}.items():
                            sums[k] = sums.get(k, 0.0) + float(v) / cfg.ppo.epochs
                        for k, v in {**pg_stats, **vf_stats}.items():
                            sums[k] = sums.get(k, 0.0) + float(v.mean()) / (len(chunks) * cfg.ppo.epochs)
                    step_info = engine.step()
                    critic_engine.step()
                stats = sums
            with timer.phase("sync"):
                rollout.sync_weights(policy_weights_for_sync(engine.module))
            kl = (targets.kl * mask).sum(-1).mean().item()
            row = {"loss": stats["policy_loss"] + loss_fn.vf_coef * stats["value_loss"], **stats, **step_info,
                   "rm_reward": scores.mean().item(), "kl": kl, **timer.row(),
                   "peak_memory_mb": peak_memory_mb(run.device),
                   "tokens": full.num_tokens * cfg.ppo.epochs}
            gold = gold_rewards([prompts.texts[i] for i in mine], rollouts, run.tokenizer)
            if gold is not None:
                row["gold_reward"] = sum(gold) / len(gold)
            row = reduce_row(row, engine)
            run.log(step + 1, row, int(row.pop("tokens")))
            run.maybe_save(step + 1)
    finally:
        rollout.close()
    return run.finish()
