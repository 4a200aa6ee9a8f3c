"""What the PPO loop (una_hpc/trainer/ppo.py) sets up beside its update: the engines' configs, where the critic
starts, and the minibatches of a PPO epoch.

    .venv/bin/python -m pytest tests/unit/test_ppo_setup.py -x -q
"""

from __future__ import annotations

import dataclasses

import torch

from ..config import Config, ConfigError
from ..hub import local_dir
from ..losses import group_advantages


def updates_per_batch(cfg: Config) -> int:
    """Optimizer steps per rollout batch: ppo.epochs x ppo.num_minibatches."""
    return cfg.ppo.epochs * cfg.ppo.num_minibatches


def policy_cfg(cfg: Config) -> Config:
    """Both engines step updates_per_batch times per rollout batch: stretch their LR schedule accordingly."""
    trainer = dataclasses.replace(cfg.trainer, max_steps=cfg.trainer.max_steps * updates_per_batch(cfg))
    return dataclasses.replace(cfg, trainer=trainer)


def critic_cfg(cfg: Config) -> Config:
    """policy_cfg with the critic's own learning rate (ppo.critic_lr; 0 = optim.lr)."""
    base = policy_cfg(cfg)
    lr = cfg.ppo.critic_lr or cfg.optim.lr
    return dataclasses.replace(base, optim=dataclasses.replace(base.optim, lr=lr))


def critic_source(cfg: Config, rm: object, policy_tokenizer: object, policy_path: str) -> tuple[str, str]:
    """(dir the critic starts from, one line saying which). `rm` is the harness's scorer: a RewardModel (a dir and
    a tokenizer) or a reward function (no model to start from: the policy)."""
    if cfg.ppo.critic_init == "policy":
        return policy_path, f"ppo: critic starts from the policy ({policy_path}) with a fresh value head"
    if cfg.rollout.reward_fn or not cfg.rollout.reward_model:
        return policy_path, "ppo: critic starts from the policy: rollout.reward_fn scores rollouts, no reward model"
    if not rm.shares_tokenizer(policy_tokenizer):
        raise ConfigError(
            f"ppo.critic_init=reward_model: {cfg.rollout.reward_model} has another tokenizer than the policy, so "
            "a critic started from it cannot read the policy's tokens; set ppo.critic_init=policy"
        )
    path = str(local_dir(cfg.rollout.reward_model, setting="rollout.reward_model"))  # a Hub id: its cached dir
    return path, f"ppo: critic starts from the reward model ({path}), its score head as the value head"


def sequence_rewards(scores: torch.Tensor, rollouts: list, cfg: Config) -> torch.Tensor:
    """PPO's sequence rewards: with loss.reward_normalize=group / group_std each score minus its prompt's mean
    (/ std), unsquashed (a prompt's samples are all on one rank); otherwise the scores as they are.
    ppo.reward_whiten / reward_clip act afterwards, in PPOLoss."""
    method = cfg.loss.reward_normalize
    if method not in ("group", "group_std"):
        return scores
    groups = [r.prompt_index for r in rollouts]
    return group_advantages(scores, groups, std=method == "group_std").to(scores.dtype)


def minibatches(n_rows: int, num_minibatches: int, seed: int) -> list[list[int]]:
    """A rank's rollout rows split into `num_minibatches` equal minibatches after a seeded shuffle (one: all rows
    in order). A row count the split does not divide is a one-line ConfigError."""
    if num_minibatches == 1:
        return [list(range(n_rows))]
    if n_rows % num_minibatches:
        raise ConfigError(
            f"ppo.num_minibatches={num_minibatches} must divide this rank's {n_rows} rollouts "
            "(rollout.prompts_per_step / data-parallel ranks x rollout.samples_per_prompt)"
        )
    order = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed)).tolist()
    size = n_rows // num_minibatches
    return [sorted(order[i : i + size]) for i in range(0, n_rows, size)]
