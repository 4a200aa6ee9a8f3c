"""The embedded default's reward model: a tiny AutoModelForSequenceClassification trained once on the synthetic
scored data (sigmoid(logit) regressed onto the gold score), cached under task.dir/reward_model.

    una-hpc train configs/online_una.yaml        # builds it on first use (no test builds it: minutes on CPU)

Online UNA and PPO score rollouts with this learned RM; the programmatic gold reward stays the judge.
una_hpc.task.defaults.fill_defaults builds it (under the task's file lock) and sets rollout.reward_model to it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..config import DataConfig, TaskConfig
from ..data.helpsteer import combine_attributes
from ..rollout.reward_train import ScoredText, load_scored_rows, train_reward_model
from .build import sample_scored_rows, train_prompt_pool

EXTRA_PROMPTS = 1024
"""Base-model samples on further train-split prompts: prompt variety is what made the RM generalize to held-out
prompts (measured: gold correlation 0.47 -> 0.62, same-prompt pair accuracy 61% -> 69%)."""


def build_default_reward_model(task, task_cfg: TaskConfig, seed: int) -> Path:
    final = Path(task_cfg.dir) / "reward_model"
    params = {
        "steps": task_cfg.rm_steps,
        "lr": task_cfg.rm_lr,
        "seed": seed,
        "data": str(task.train_path),
        "base": str(task.model_dir),
        "extra_prompts": EXTRA_PROMPTS,
        "batch_size": 32,
    }
    marker = final / "_build.json"
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return final
    tmp = final.with_name(f".reward_model.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"[task] reward_model: training {task_cfg.rm_steps} steps on {task.train_path}")
    rows = load_scored_rows(DataConfig(path=str(task.train_path), format="helpsteer2"))
    extra = train_prompt_pool(task_cfg, seed)[task_cfg.num_prompts : task_cfg.num_prompts + EXTRA_PROMPTS]
    rows += [
        ScoredText(r["prompt"], r["response"], combine_attributes(r))
        for r in sample_scored_rows(task.model_dir, extra, 2, seed + 1)
    ]
    train_reward_model(task.model_dir, rows, tmp, steps=task_cfg.rm_steps, lr=task_cfg.rm_lr, seed=seed, batch_size=32)
    marker_tmp = tmp / "_build.json"
    marker_tmp.write_text(json.dumps(params))
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    return final
