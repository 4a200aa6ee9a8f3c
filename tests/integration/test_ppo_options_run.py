"""The PPO loop with its run-shaping options (issue 16, item 1): critic from the reward model with its own learning
rate, two minibatches per epoch, adaptive KL; HF engine, tiny model, in-process.

    .venv/bin/python -m pytest tests/integration/test_ppo_options_run.py -x -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from text_corpus import scored_rows, write_jsonl

from una_hpc.config import load_config
from una_hpc.trainer import run_training

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_ppo_minibatches_critic_lr_and_adaptive_kl(tiny_model_dir, tmp_path, capsys):
    from una_hpc.rollout.reward_train import train_reward_model

    rows = scored_rows(8, 1, seed=1, score=lambda prompt, response: float("cat" in response))
    data = write_jsonl(tmp_path / "prompts.jsonl", rows)
    rm = train_reward_model(
        tiny_model_dir, [(r["prompt"], r["response"], r["score"]) for r in rows], tmp_path / "rm", steps=3, lr=3e-4
    )
    out = tmp_path / "ppo"
    overrides = [
        f"model.path={tiny_model_dir}",
        f"data.path={data}",
        "data.format=score",
        f"rollout.reward_model={rm}",
        f"trainer.output_dir={out}",
        "trainer.progress=false",
        "trainer.max_steps=3",
        "trainer.micro_batch_size=0",
        "rollout.engine=hf",
        "rollout.prompts_per_step=2",
        "rollout.samples_per_prompt=2",
        "rollout.max_new_tokens=8",
        "optim.lr=1e-4",
        "optim.warmup_steps=0",
        "optim.schedule=constant",
        "ppo.epochs=1",
        "ppo.num_minibatches=2",
        "ppo.critic_lr=3e-5",
        "ppo.kl_target=1.0",
        "ppo.kl_horizon=10",
    ]
    run_training(load_config(REPO / "configs" / "online_ppo.yaml", overrides))
    assert f"ppo: critic starts from the reward model ({rm})" in capsys.readouterr().out
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    # Adaptive beta, recomputed from each step's logged KL (4 rollouts a step; step 1's policy is the reference).
    beta = 0.05
    assert metrics[0]["kl"] == 0.0
    for row in metrics:
        assert row["kl_coef"] == pytest.approx(beta, rel=1e-9)
        beta *= 1 + min(max(row["kl"] / 1.0 - 1, -0.2), 0.2) * 4 / 10
    saved = json.loads((out / "checkpoints" / "step-000003" / "trainer_state.json").read_text())
    assert saved["extra"]["kl_coef"] == pytest.approx(beta, rel=1e-9)  # what a resumed step 4 starts from
    # Two optimizer steps per rollout batch for both models, each at its own learning rate.
    states = {p.parent.name: torch.load(p, weights_only=False) for p in (out / "checkpoints").rglob("optimizer.pt")}
    assert len(states) == 2, sorted(states)
    critic = states.pop("critic")
    (policy,) = states.values()
    for state, lr in ((policy, 1e-4), (critic, 3e-5)):
        assert {float(s["step"]) for s in state["state"].values()} == {6.0}
        assert {g["lr"] for g in state["param_groups"]} == {lr}
