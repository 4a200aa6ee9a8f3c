"""Reward functions for online runs: `rollout.reward_fn=module:function`, written as TRL's GRPO users write them.

    # my_rewards.py
    def brevity(prompts: list, completions: list[str]) -> list[float]:
        return [1.0 if len(c.split()) <= 20 else 0.0 for c in completions]

    una-hpc train configs/online_una.yaml rollout.reward_fn=my_rewards:brevity loss.reward_normalize=none

One call per step and rank, batched: `prompts[i]` is completion i's prompt as the data holds it (a string or a chat
message list), `completions[i]` its text decoded with the policy's tokenizer (special tokens skipped). The function
returns one finite float per completion; those are the explicit rewards the loop uses where it would use reward-model
logits (online UNA normalizes them by loss.reward_normalize: `none` for a function that already returns [0, 1]; PPO
takes them as the sequence reward). A result of the wrong length or type, or a non-finite value, is one line naming
the function.

Tested by: .venv/bin/python -m pytest tests/unit/test_reward_fn.py -q
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from ..hooks import load_function
from .base import Rollout


class RewardFunctionError(ValueError):
    """A reward function returned something that is not one finite float per completion (one line)."""


@dataclass
class RewardFunction:
    """A batched text -> float reward, scoring rollouts through the same call as `RewardModel.score_rollouts`."""

    fn: Callable
    name: str

    @classmethod
    def load(cls, spec: str) -> RewardFunction:
        return cls(load_function(spec, setting="rollout.reward_fn"), spec)

    def __call__(self, prompts: Sequence, completions: Sequence[str]) -> Tensor:
        values = self.fn(list(prompts), list(completions))
        try:
            values = [float(v) for v in values]
        except (TypeError, ValueError):
            raise RewardFunctionError(
                f"rollout.reward_fn {self.name}: must return one float per completion, got {type(values).__name__}"
            ) from None
        if len(values) != len(completions):
            raise RewardFunctionError(
                f"rollout.reward_fn {self.name}: returned {len(values)} values for {len(completions)} completions"
            )
        bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
        if bad is not None:
            raise RewardFunctionError(f"rollout.reward_fn {self.name}: completion {bad} got {values[bad]}")
        return torch.tensor(values, dtype=torch.float32)

    def score_rollouts(
        self, rollouts: Sequence[Rollout], prompts: Sequence, policy_tokenizer: PreTrainedTokenizerBase
    ) -> Tensor:
        """[N] float32 rewards; `prompts[r.prompt_index]` is rollout r's prompt."""
        completions = policy_tokenizer.batch_decode([r.completion_ids for r in rollouts], skip_special_tokens=True)
        return self([prompts[r.prompt_index] for r in rollouts], completions)
