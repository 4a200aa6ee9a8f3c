"""rollout.eval_every: held-out prompts answered by the online loop's own rollout engine, every N steps.

    evaluator = OnlineEval.open(run, harness.rm, harness.gold)     # before anything is written; None on ranks > 0
    row.update(evaluator.metrics(rollout_engine))                  # eval_* keys on that step's metrics row

The engine holds the weights just synced after the step, so the numbers describe the policy after that many
updates. Prompts: the first rollout.eval_prompts held-out prompts (data.eval_path; the embedded task's held-out split
by default) that fit data.max_prompt_length and trainer.max_length - eval.max_new_tokens. One response each with
eval.max_new_tokens, eval.temperature (0 = greedy, the default) and the rollout's stop strings, seeded by
trainer.seed, so only the policy moves the numbers (and the engine's sampling state for training is untouched:
per-request seeds in vLLM, a forked RNG in the HF engine). The reward is picked as `una-hpc eval` picks it
(una_hpc.trainer.evaluate.pick_scorer): the eval.gold_reward hook where it knows the prompts, else eval.reward_model,
else the run's reward model; with rollout.reward_fn and neither, the reward function. Logged: eval_reward with its
95% interval (evaluate.mean_ci95, over prompts), eval_response_tokens and eval_truncated (the fraction that hit
eval.max_new_tokens).

Tested by: .venv/bin/python -m pytest tests/integration/test_online_features.py -q
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError
from ..data.tokenize import encode_prompts
from ..rollout.base import SamplingSettings
from ..rollout.reward import RewardModel
from ..rollout.reward_fn import RewardFunction
from ..rollout.truncation import is_truncated
from .evaluate import Scorer, decode, fit_prompts, mean_ci95, pick_scorer, read_eval_prompts
from .run import Run


@dataclass
class OnlineEval:
    run: Run
    prompts: list
    ids: list[list[int]]
    scorer: Scorer
    settings: SamplingSettings

    @classmethod
    def open(cls, run: Run, rm: RewardModel | RewardFunction, gold) -> OnlineEval | None:
        """None when rollout.eval_every is 0 or on ranks other than 0; one-line ConfigError (every rank) when there
        are no held-out prompts to evaluate on."""
        cfg = run.cfg
        if cfg.rollout.eval_every == 0:
            return None
        if run.inputs.eval_path is None:
            raise ConfigError(
                "rollout.eval_every needs held-out prompts: set data.eval_path (a file with a `prompt` column)"
            )
        limit = min(cfg.data.max_prompt_length, cfg.trainer.max_length - cfg.eval.max_new_tokens)
        prompts, _ = fit_prompts(run.tokenizer, read_eval_prompts(run.inputs.eval_path, run.inputs.eval_split), limit)
        prompts = prompts[: cfg.rollout.eval_prompts]
        if not prompts:
            raise ConfigError(
                f"rollout.eval_every: no prompt of {run.inputs.eval_path} fits {limit} tokens "
                "(data.max_prompt_length, trainer.max_length - eval.max_new_tokens)"
            )
        if not run.is_main:
            return None
        reward_model = cfg.eval.reward_model or (rm if isinstance(rm, RewardModel) else None)
        scorer = pick_scorer(prompts, reward_model, gold=gold, device=run.device)
        if scorer is None:  # rollout.reward_fn scores training rollouts; nothing better is set
            scorer = Scorer("reward_fn", lambda ps, rs: rm(ps, rs).tolist(), rm.name)
        settings = SamplingSettings(
            max_new_tokens=cfg.eval.max_new_tokens,
            temperature=cfg.eval.temperature,
            stop=tuple(cfg.rollout.stop),
            seed=cfg.trainer.seed,
        )
        return cls(run, prompts, encode_prompts(run.tokenizer, prompts), scorer, settings)

    def metrics(self, engine) -> dict[str, float]:
        """Generate on the held-out prompts with `engine` now and score the responses (see the module docstring)."""
        rollouts = engine.generate(self.ids, 1, self.settings)
        responses = [decode(self.run.tokenizer, r.completion_ids) for r in rollouts]
        reward = mean_ci95(self.scorer.score(self.prompts, responses))
        lo, hi = reward["ci95"]
        return {
            "eval_reward": reward["mean"],
            "eval_reward_ci_low": lo,
            "eval_reward_ci_high": hi,
            "eval_response_tokens": sum(len(r.completion_ids) for r in rollouts) / len(rollouts),
            "eval_truncated": sum(is_truncated(r) for r in rollouts) / len(rollouts),
        }
