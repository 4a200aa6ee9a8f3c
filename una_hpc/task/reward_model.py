"""The embedded default's reward model: a tiny AutoModelForSequenceClassification trained once on the synthetic
scored data (sigmoid(logit) regressed onto the gold score), cached beside the task's data under
task.dir/seed-<task.seed>/reward_model-<sizes>/ (una_hpc.task.build.step_names), seeded by task.seed.

    una-hpc train configs/online_una.yaml        # builds it on first use (no test builds it: minutes on CPU)

Online UNA and PPO score rollouts with this learned RM; the programmatic gold reward stays the judge. PPO's critic
starts from it too (ppo.critic_init=reward_model). una_hpc.task.defaults.fill_defaults builds it (under the task's
file lock) and sets rollout.reward_model to it.
"""

from __future__ import annotations

from pathlib import Path

from ..config import DataConfig, TaskConfig
from ..data.helpsteer import combine_attributes
from ..rollout.reward_train import ScoredText, load_scored_rows, train_reward_model
from .build import DefaultTask, build_step, sample_scored_rows, step_names, train_prompt_pool

EXTRA_PROMPTS = 1024
"""Base-model samples on further train-split prompts: prompt variety is what made the RM generalize to held-out
prompts (measured: gold correlation 0.47 -> 0.62, same-prompt pair accuracy 61% -> 69%)."""


def build_default_reward_model(task: DefaultTask, task_cfg: TaskConfig, log=print) -> Path:
    """Build (or reuse) the task's reward model in its own step folder; returns that folder."""
    seed = task_cfg.seed
    params = {
        "steps": task_cfg.rm_steps,
        "lr": task_cfg.rm_lr,
        "seed": seed,
        "data": task.train_path.parent.name,  # names, not paths: a moved task.dir stays valid
        "base": task.model_dir.name,
        "extra_prompts": EXTRA_PROMPTS,
        "batch_size": 32,
    }

    def build(out: Path) -> dict:
        log(f"[task] reward_model: training {task_cfg.rm_steps} steps on {task.train_path}")
        rows = load_scored_rows(DataConfig(path=str(task.train_path), format="helpsteer2"))
        extra = train_prompt_pool(task_cfg)[task_cfg.num_prompts : task_cfg.num_prompts + EXTRA_PROMPTS]
        rows += [
            ScoredText(r["prompt"], r["response"], combine_attributes(r))
            for r in sample_scored_rows(task.model_dir, extra, 2, seed + 1)
        ]
        train_reward_model(
            task.model_dir, rows, out, steps=task_cfg.rm_steps, lr=task_cfg.rm_lr, seed=seed, batch_size=32
        )
        return {}

    return build_step(task.dir, step_names(task_cfg)["reward_model"], params, build, log)
