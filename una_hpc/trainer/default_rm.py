"""The embedded default's reward model: a tiny AutoModelForSequenceClassification trained once on the synthetic
scored data (sigmoid(logit) regressed onto the gold score), cached under task.dir/reward_model.

Online UNA and PPO score rollouts with this learned RM; the programmatic gold reward stays the judge.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..config import DataConfig, TaskConfig
from ..rollout.reward_train import load_scored_rows, train_reward_model


def build_default_reward_model(task, task_cfg: TaskConfig, seed: int) -> Path:
    final = Path(task_cfg.dir) / "reward_model"
    params = {"steps": task_cfg.rm_steps, "lr": task_cfg.rm_lr, "seed": seed, "data": str(task.train_path),
              "base": str(task.model_dir)}
    marker = final / "_build.json"
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return final
    tmp = final.with_name(f".reward_model.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"[task] reward_model: training {task_cfg.rm_steps} steps on {task.train_path}")
    rows = load_scored_rows(DataConfig(path=str(task.train_path), format="helpsteer2"))
    train_reward_model(task.model_dir, rows, tmp, steps=task_cfg.rm_steps, lr=task_cfg.rm_lr, seed=seed)
    marker_tmp = tmp / "_build.json"
    marker_tmp.write_text(json.dumps(params))
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    return final
