"""PPO baseline (loss.name=ppo) in the online UNA harness: same engine, reward model, prompts, batch sizes, logs.

    una-hpc train configs/online_ppo.yaml

Per rollout batch: old / reference per-token logps (one fused-kernel pass) and critic values -> shaped scores
(rollout.truncated's penalty, loss.reward_normalize=group / group_std's per-prompt advantages, ppo.reward_whiten /
reward_clip) -> KL-shaped rewards (beta: ppo.kl_coef in ppo.kl_coef_unit, adapted toward
ppo.kl_target when set) -> GAE -> `ppo.epochs` epochs of `ppo.num_minibatches` optimizer steps of clipped surrogate
(policy) + clipped value loss (critic). The critic is a second model, started from the reward model by default
(ppo.critic_init), with its own engine and learning rate (ppo.critic_lr): the memory and time PPO pays over online
UNA. Set-up helpers: ppo_setup.py.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import Config
from ..data.packing import unpacked
from ..feedback import IGNORE_INDEX
from ..losses import PPOLoss, ppo_policy_loss, ppo_value_loss
from ..losses.kl_control import KLController
from ..losses.ppo import sequence_kl
from ..models.value import ValueModel
from ..parallel import build_engine
from .online_common import OnlineHarness, rollouts_to_examples
from .ppo_setup import critic_cfg, critic_source, minibatches, policy_cfg, sequence_rewards, updates_per_batch
from .sampler import micro_batches
from .step import token_logps


def _critic_values(critic_engine, batch) -> torch.Tensor:
    with critic_engine.autocast():
        return critic_engine(input_ids=batch.input_ids, attention_mask=(~batch.pad_mask).long())


def train(cfg: Config) -> Path:
    harness = OnlineHarness.open(cfg)
    run, pair = harness.run, harness.run.pair
    critic_path, critic_line = critic_source(cfg, harness.rm, run.tokenizer, str(run.inputs.model_path))
    if run.is_main:
        print(critic_line)
    critic_engine = build_engine(ValueModel.from_pretrained(critic_path).to(run.device), critic_cfg(cfg))
    run.extra_engines["critic"] = critic_engine
    harness.start(engine=build_engine(pair.policy, policy_cfg(cfg)))
    harness.sum_keys = ("loss", "tokens", "policy_loss", "value_loss")  # normalized by the global token count
    engine, pad_id = run.engine, run.tokenizer.pad_token_id
    loss_fn = PPOLoss.from_config(cfg.ppo)
    kl_ctl = KLController.from_config(cfg.ppo)
    kl_ctl.value = run.extra_state.get("kl_coef", kl_ctl.value)  # a resumed run continues with its adapted beta
    updates = updates_per_batch(cfg)

    def update(step, mine, rollouts, scores) -> dict:
        examples = rollouts_to_examples(rollouts, scores)
        full = unpacked(examples, pad_id).to(run.device)  # one rollout per row, one width
        run.hook(step, [full])  # targets carry the scores here, so a hook can change what PPO is rewarded with
        scores = full.targets.target.to(scores.dtype)
        mask = (full.labels != IGNORE_INDEX).float()
        chunks = micro_batches(list(range(len(examples))), cfg.trainer.micro_batch_size)
        with torch.no_grad():  # old / reference logps and values, then GAE over the whole rollout batch
            parts = [token_logps(engine, pair, full.select_rows(c), with_ref=True) for c in chunks]
            old_logp = torch.cat([p[0] for p in parts])
            ref_logp = torch.cat([p[1] for p in parts])
            old_values = torch.cat([_critic_values(critic_engine, full.select_rows(c)) for c in chunks])
            beta = kl_ctl.value
            targets = loss_fn.targets(
                old_logp,
                ref_logp,
                old_values,
                mask,
                sequence_rewards(scores, rollouts, cfg),
                kl_coef=beta,
                reduce=engine.all_reduce_dp,  # whitening over every rank's rollouts: independent of the rank count
            )
        stats: dict[str, float] = {}
        n_micro = 0
        skipped = 0.0  # a non-finite epoch of either model marks the step (each engine skipped its own update)
        # ppo.epochs passes over the rollout batch, each in ppo.num_minibatches optimizer steps (seeded per step)
        seed = cfg.trainer.seed * 7919 + step * 31
        per_update = [
            mb for e in range(cfg.ppo.epochs) for mb in minibatches(len(examples), cfg.ppo.num_minibatches, seed + e)
        ]
        for mb in per_update:
            token_count = engine.sum_over_dp({"t": float(mask[mb].sum())})["t"]  # this minibatch, all ranks
            for c in micro_batches(mb, cfg.trainer.micro_batch_size):
                batch, m = full.select_rows(c), mask[c]
                n_micro += 1
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
                    stats[k] = stats.get(k, 0.0) + float(v.detach()) / updates
                for k, v in {**pg_stats, **vf_stats}.items():
                    stats[k] = stats.get(k, 0.0) + float(v.mean())
            step_info = engine.step()
            critic_info = critic_engine.step()
            skipped = max(skipped, step_info["skipped"], critic_info["skipped"])
        for k in (*pg_stats, *vf_stats):  # ratios: means over every micro-batch of every update
            stats[k] /= n_micro
        seq_kl = engine.sum_over_dp(
            {"kl": float(sequence_kl(targets.kl, mask, cfg.ppo.kl_coef_unit).sum()), "n": float(len(mask))}
        )
        run.extra_state["kl_coef"] = kl_ctl.update(seq_kl["kl"] / seq_kl["n"], int(seq_kl["n"]))
        return {
            "loss": stats["policy_loss"] + loss_fn.vf_coef * stats["value_loss"],
            **stats,
            **step_info,
            "skipped": skipped,
            "rm_reward": scores.mean().item(),
            "kl_coef": beta,
            "kl": (targets.kl * mask).sum(-1).mean().item(),
            "tokens": full.num_tokens * cfg.ppo.epochs,
        }

    return harness.train(update)
