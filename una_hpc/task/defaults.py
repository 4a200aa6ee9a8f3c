"""The embedded default task filled into a config before any loop starts: the entry points' one call.

    cfg = fill_defaults(load_config("configs/quickstart.yaml"))     # una-hpc train / eval / demo / train-rm
    .venv/bin/python -m pytest tests/integration/test_demo.py -q

With model.path empty it builds (or reuses) the task of task.seed under task.dir/seed-<task.seed>/
(una_hpc.task.build; trainer.seed never reaches the task, so runs with different training seeds share one base
model, one dataset and one reward model) and sets model.path to its base model; with data.path empty too,
data.path and data.format to its scored dataset and data.eval_path (when empty) to its held-out prompts; for a loss
head whose loop scores rollouts (una_online, ppo), rollout.reward_model (when it and rollout.reward_fn are empty)
to the task's reward model (una_hpc.task.reward_model). A model.path the user set builds nothing: without
data.path the trainer stops with one line. eval.gold_reward, when empty, becomes the task's exact gold reward; it
answers None on other prompts, so runs on user data score as before.

The trainer never imports this package; it only reads the paths and the hook this function wrote into the config.
Several processes of one launch call this before torch.distributed exists: a file lock in task.dir lets the first
build while the others wait, then find every step cached.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import Config

GOLD_REWARD = "una_hpc.task.grammar:gold_rewards"
"""eval.gold_reward of the embedded task (una_hpc.hooks.load_function resolves it)."""


def fill_defaults(cfg: Config, *, reward_model: bool = True) -> Config:
    """Fill `cfg` in place (see the module docstring) and return it. reward_model=False leaves rollout.reward_model
    alone (eval reads none; train-rm writes one there)."""
    if not cfg.eval.gold_reward:
        cfg.eval.gold_reward = GOLD_REWARD
    if cfg.model.path:
        return cfg
    # Imported here: building loads torch and transformers, which a config with model.path set never needs.
    from filelock import FileLock

    from ..losses import get_head
    from .build import build_default_task
    from .reward_model import build_default_reward_model

    task_dir = Path(cfg.task.dir)
    task_dir.mkdir(parents=True, exist_ok=True)
    quiet = os.environ.get("RANK", "0") != "0"  # every rank of a launch passes here; rank 0 reports
    with FileLock(task_dir / ".build.lock"):
        log = (lambda _: None) if quiet else print
        task = build_default_task(cfg.task, log=log)
        cfg.model.path = str(task.model_dir)
        if not cfg.data.path:
            cfg.data.path, cfg.data.format = str(task.train_path), "helpsteer2"
            cfg.data.eval_path = cfg.data.eval_path or str(task.heldout_path)
        needs_rm = not (cfg.rollout.reward_model or cfg.rollout.reward_fn)
        if reward_model and needs_rm and get_head(cfg.loss.name).loop != "offline":
            cfg.rollout.reward_model = str(build_default_reward_model(task, cfg.task, log=log))
    return cfg
