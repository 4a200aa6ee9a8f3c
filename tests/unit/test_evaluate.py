"""Evaluation: interval, win rate, KL estimate, batched generation, eval.json, plots, and the SFT->generate contract.

    .venv/bin/python -m pytest tests/unit/test_evaluate.py -q
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from una_hpc.config import EvalConfig
from una_hpc.data.synthetic import gold_score, sample_prompts
from una_hpc.trainer.evaluate import evaluate, generate, kl_estimate, load_model, mean_ci95, win_rate
from una_hpc.trainer.plots import plot_metrics, plot_runs
from una_hpc.trainer.sft import IGNORE_INDEX, SFTConfig, collate, encode_example, encode_prompt, train_sft

PROMPTS = ["add 4 and 5", "list three colors", "sort these words: pear apple fig plum", "spell cat",
           "count down from 9 to 5", "what is the opposite of hot", "repeat dog 3 times", "reverse: cat dog red"]


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def test_mean_ci95_by_hand():
    r = mean_ci95([0.0, 1.0, 1.0, 0.0])
    half = 1.96 * math.sqrt(1 / 3) / 2  # sample std sqrt(1/3), n = 4
    assert r["mean"] == 0.5 and r["std"] == pytest.approx(math.sqrt(1 / 3))
    assert r["ci95"] == pytest.approx([0.5 - half, 0.5 + half])
    assert mean_ci95([0.3])["ci95"] == [0.3, 0.3]


def test_win_rate_counts_ties_as_half():
    assert win_rate([1.0, 0.5, 0.0], [0.0, 0.5, 1.0]) == {"rate": 0.5, "wins": 1, "ties": 1, "losses": 1}
    assert win_rate([0.9, 0.8], [0.1, 0.8])["rate"] == 0.75
    with pytest.raises(ValueError):
        win_rate([1.0], [])


def test_left_padded_batches_match_one_by_one(tiny_model_dir, tok):
    model = load_model(tiny_model_dir)
    assert len({len(encode_prompt(tok, p)) for p in PROMPTS}) > 3  # really different lengths -> real padding
    batched = generate(model, tok, PROMPTS, max_new_tokens=10, batch_size=len(PROMPTS))
    single = generate(model, tok, PROMPTS, max_new_tokens=10, batch_size=1)
    assert batched == single
    a = generate(model, tok, PROMPTS, max_new_tokens=10, temperature=1.0, seed=1)
    assert a == generate(model, tok, PROMPTS, max_new_tokens=10, temperature=1.0, seed=1)
    assert a != generate(model, tok, PROMPTS, max_new_tokens=10, temperature=1.0, seed=2)


def test_evaluate_against_itself(tiny_model_dir, tok, tmp_path):
    cfg = EvalConfig(num_prompts=6, max_new_tokens=12)
    r = evaluate(tiny_model_dir, None, PROMPTS, cfg, baseline=tiny_model_dir, reference=tiny_model_dir,
                 out_dir=tmp_path)
    assert r["num_prompts"] == 6 and len(r["samples"]) == 6
    g = r["gold_reward"]
    assert g["ci95"][0] <= g["mean"] <= g["ci95"][1]
    rescored = [gold_score(s["prompt"], s["response"]) for s in r["samples"]]
    assert g["mean"] == pytest.approx(sum(rescored) / 6)
    assert r["win_rate"]["rate"] == 0.5 and r["win_rate"]["ties"] == 6
    assert abs(r["kl"]["mean"]) < 1e-6 and r["kl"]["samples"] == 6
    on_disk = json.loads((tmp_path / "eval.json").read_text())
    assert on_disk["gold_reward"] == g and on_disk["samples"] == r["samples"]
    # responses given instead of a baseline model: a baseline that always answers "9" loses on "add 4 and 5"
    r2 = evaluate(load_model(tiny_model_dir), tok, PROMPTS[:1], cfg, baseline=["9"])
    assert r2["win_rate"]["losses"] == 1 and "path" not in r2  # in-memory model, no out_dir: nothing written


def test_kl_estimate_matches_exact_one_token_kl(tiny_model_dir, tok):
    policy = load_model(tiny_model_dir)
    reference = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        reference.lm_head.weight.add_(0.5 * torch.randn(reference.lm_head.weight.shape, generator=g))
    prompt = "add 4 and 5"
    ids = torch.tensor([encode_prompt(tok, prompt)])
    with torch.no_grad():
        lp = torch.log_softmax(policy(ids).logits[0, -1].double(), -1)
        lq = torch.log_softmax(reference(ids).logits[0, -1].double(), -1)
    exact = float((lp.exp() * (lp - lq)).sum())
    est = kl_estimate(policy, reference, tok, [prompt] * 600, max_new_tokens=1, seed=0)
    assert exact > 0.05
    assert abs(est["mean"] - exact) < 4 * est["stderr"] + 1e-3
    assert est["samples"] == 600


def test_sft_then_generate_reproduces_the_answer(tiny_model_dir, tok):
    ids, labels = encode_example(tok, "add 2 and 3", "5", max_length=64)
    n_prompt = len(encode_prompt(tok, "add 2 and 3"))
    assert ids[:n_prompt] == encode_prompt(tok, "add 2 and 3")
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt and labels[-1] == tok.eos_token_id
    batch = collate([(ids, labels), ([1, 2], [IGNORE_INDEX, 2])], tok.pad_token_id)
    assert batch["attention_mask"].tolist()[1][2:] == [0] * (len(ids) - 2)

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    pairs = [("add 2 and 3", "5"), ("spell cat", "c a t")]
    before = generate(model, tok, [p for p, _ in pairs], max_new_tokens=8)
    rows = train_sft(model, tok, pairs, SFTConfig(steps=40, batch_size=2, lr=3e-3, warmup_steps=5, log_every=10),
                     log=None)
    assert rows[-1]["loss"] < 0.1 * rows[0]["loss"]
    after = generate(model, tok, [p for p, _ in pairs], max_new_tokens=8)
    assert after == ["5", "c a t"] and before != after


def test_plots_write_pngs(tmp_path):
    run = {"gold_reward": mean_ci95([0.2, 0.4, 0.6]), "win_rate": {"rate": 0.7}}
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "eval.json").write_text(json.dumps({"gold_reward": mean_ci95([0.5, 0.9])}))
    out = plot_runs({"una": run, "base": tmp_path / "b"}, tmp_path / "runs.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": i, "loss": 1 / i, "reward_mean": i / 10, "tokens_per_s": 9})
                               + "\n" for i in range(1, 6)))
    curve = plot_metrics(metrics, tmp_path / "curve.png")
    assert curve.read_bytes()[:4] == b"\x89PNG" and curve.stat().st_size > 1000
    with pytest.raises(ValueError):
        plot_runs({}, tmp_path / "none.png")


def test_heldout_prompts_are_evaluable():
    for p in sample_prompts(64, seed=42, split="heldout"):
        assert 0.0 <= gold_score(p, "") <= 1.0
