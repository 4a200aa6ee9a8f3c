"""Evaluation: interval, win rate, KL through the fused kernel (vs float64 full logits), RM-scored eval of a user
model, batched generation, eval prompts from files, eval.json, plots, and the SFT->generate contract.

    .venv/bin/python -m pytest tests/unit/test_evaluate.py -q
"""

from __future__ import annotations

import copy
import json
import math
import statistics

import pandas as pd
import pytest
import torch
from text_corpus import corpus
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForSequenceClassification

from una_hpc.config import EvalConfig
from una_hpc.data.tokenize import encode_prompts
from una_hpc.feedback import IGNORE_INDEX
from una_hpc.models.policy import PolicyPair
from una_hpc.models.tiny import tiny_llama_config, train_tokenizer
from una_hpc.rollout.reward import RewardModel
from una_hpc.task.grammar import gold_score, sample_prompts
from una_hpc.task.sft import SFTConfig, collate, encode_example, encode_prompt, train_sft
from una_hpc.trainer.eval_kl import policy_ref_logps
from una_hpc.trainer.evaluate import (
    evaluate,
    fit_prompts,
    generate,
    generate_ids,
    load_model,
    mean_ci95,
    read_eval_prompts,
    sampled_kl,
    win_rate,
)
from una_hpc.trainer.plots import plot_metrics, plot_runs

PROMPTS = [
    "add 4 and 5",
    "list three colors",
    "sort these words: pear apple fig plum",
    "spell cat",
    "count down from 9 to 5",
    "what is the opposite of hot",
    "repeat dog 3 times",
    "reverse: cat dog red",
]
# A user's prompts: plain English, outside the embedded task's grammar (so no gold reward applies).
USER_PROMPTS = [
    "tell me about the cat on the mat",
    "is the red dog blue or green",
    "please answer one question",
    "the cat sat and the dog sat",
    "count the blue cats please",
    "say yes or no to the dog",
    "list the green and red ones",
    "what is a mat",
]


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
    assert win_rate([0.9, 0.8], [0.1, 0.8])["rate"] == 0.75  # ties dropped would give 1.0; ties as losses 0.5
    assert win_rate([0.2, 0.2, 0.2, 0.9], [0.2, 0.2, 0.2, 0.1])["rate"] == 0.625
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
    cfg = EvalConfig(num_prompts=6, max_new_tokens=12, gold_reward="una_hpc.task.grammar:gold_rewards")
    r = evaluate(
        tiny_model_dir, None, PROMPTS, cfg, baseline=tiny_model_dir, reference=tiny_model_dir, out_dir=tmp_path
    )
    assert r["num_prompts"] == 6 and len(r["samples"]) == 6
    assert r["reward_source"] == "gold" and r["gold_reward"] == r["reward"]  # embedded prompts: exact gold reward
    g = r["reward"]
    rescored = [gold_score(s["prompt"], s["response"]) for s in r["samples"]]
    assert [s["prompt"] for s in r["samples"]] == PROMPTS[:6]
    assert [s["score"] for s in r["samples"]] == pytest.approx(rescored, abs=1e-12)
    mean, std = sum(rescored) / 6, statistics.stdev(rescored)  # sample std (n - 1), computed here
    assert std > 0  # distinct scores, so a wrong interval width shows
    assert (g["mean"], g["std"], g["n"]) == (pytest.approx(mean), pytest.approx(std), 6)
    assert g["ci95"] == pytest.approx([mean - 1.96 * std / math.sqrt(6), mean + 1.96 * std / math.sqrt(6)])
    assert r["win_rate"]["rate"] == 0.5 and r["win_rate"]["ties"] == 6
    assert abs(r["kl"]["mean"]) < 1e-6 and r["kl"]["samples"] == 6
    on_disk = json.loads((tmp_path / "eval.json").read_text())
    assert on_disk["reward"] == g and on_disk["samples"] == r["samples"]
    # responses given instead of a baseline model: a baseline that always answers "9" loses on "add 4 and 5"
    r2 = evaluate(load_model(tiny_model_dir), tok, PROMPTS[:1], cfg, baseline=["9"])
    assert r2["win_rate"]["losses"] == 1 and "path" not in r2  # in-memory model, no out_dir: nothing written


# ------------------------------------------------------------------------------ KL through the fused kernel
def _perturbed(model, scale: float = 0.3, seed: int = 0):
    """A copy of `model` with noise on every weight: a reference the policy really differs from."""
    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * p.abs().mean() * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))
    return other


def _full_logits_logps(model, prompt_ids, completion_ids) -> torch.Tensor:
    """The definition in float64, one unpadded sequence at a time: sum of log_softmax(full logits)[next token]."""
    m = copy.deepcopy(model).double().eval()
    out = []
    with torch.no_grad():
        for p, c in zip(prompt_ids, completion_ids):
            logits = m(input_ids=torch.tensor([p + c])).logits[0]
            logp = torch.log_softmax(logits[len(p) - 1 : len(p) + len(c) - 1], dim=-1)
            out.append(logp.gather(1, torch.tensor(c).unsqueeze(1)).sum())
    return torch.stack(out)


def _samples(policy, tok, prompts, n_tokens=10):
    prompt_ids = encode_prompts(tok, prompts)
    completions = generate_ids(policy, tok, prompts, max_new_tokens=n_tokens, temperature=1.0, seed=3)
    assert len({len(c) for c in completions}) > 1 or n_tokens == 1  # rows of different widths: real padding
    return prompt_ids, completions


def test_kernel_logps_equal_float64_full_logits(tiny_model_dir, tok):
    policy = load_model(tiny_model_dir)
    reference = _perturbed(policy)
    prompt_ids, completions = _samples(policy, tok, USER_PROMPTS, n_tokens=12)
    want_p = _full_logits_logps(policy, prompt_ids, completions)
    want_r = _full_logits_logps(reference, prompt_ids, completions)
    # fp32 models: the kernel's fp32 sums agree with the float64 definition to rounding
    got_p, got_r = policy_ref_logps(policy, reference, prompt_ids, completions, pad_id=tok.pad_token_id, batch_size=3)
    assert got_p.dtype == torch.float64 and got_p.shape == (len(USER_PROMPTS),)
    torch.testing.assert_close(got_p, want_p, rtol=0, atol=2e-4)
    torch.testing.assert_close(got_r, want_r, rtol=0, atol=2e-4)
    assert (want_p - want_r).abs().max() > 0.5  # the reference really differs
    # float64 models through the same path: equal to float64 rounding
    got_p, got_r = policy_ref_logps(
        copy.deepcopy(policy).double(),
        copy.deepcopy(reference).double(),
        prompt_ids,
        completions,
        pad_id=tok.pad_token_id,
        batch_size=8,
    )
    torch.testing.assert_close(got_p, want_p, rtol=0, atol=1e-9)
    torch.testing.assert_close(got_r, want_r, rtol=0, atol=1e-9)


def test_kernel_logps_with_lora_reference_and_head_bias(tiny_model_dir, tok):
    from peft import LoraConfig, get_peft_model

    base = load_model(tiny_model_dir)
    prompt_ids, completions = _samples(base, tok, USER_PROMPTS[:4])
    # LoRA: the reference is the policy itself with its adapter off (PolicyPair.reference, a context factory)
    policy = get_peft_model(
        copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    policy.train()
    pair = PolicyPair(policy, None, "sdpa", lora=True)
    got_p, got_r = policy_ref_logps(policy, pair.reference, prompt_ids, completions, pad_id=tok.pad_token_id)
    assert policy.training  # put back in the mode it had
    torch.testing.assert_close(got_r, _full_logits_logps(base, prompt_ids, completions), rtol=0, atol=2e-4)
    merged = copy.deepcopy(policy).merge_and_unload()
    torch.testing.assert_close(got_p, _full_logits_logps(merged, prompt_ids, completions), rtol=0, atol=2e-4)
    # heads with a bias on one side only: the kernel's bias / ref_bias path, and the two-pass path
    biased = copy.deepcopy(base)
    lm = biased.lm_head
    biased.lm_head = torch.nn.Linear(lm.in_features, lm.out_features, bias=True)
    with torch.no_grad():
        biased.lm_head.weight.copy_(lm.weight)
        biased.lm_head.bias.copy_(torch.randn(lm.out_features, generator=torch.Generator().manual_seed(1)))
    want_b = _full_logits_logps(biased, prompt_ids, completions)
    want_base = _full_logits_logps(base, prompt_ids, completions)
    for pol, ref, want in ((base, biased, (want_base, want_b)), (biased, base, (want_b, want_base))):
        got = policy_ref_logps(pol, ref, prompt_ids, completions, pad_id=tok.pad_token_id)
        torch.testing.assert_close(got[0], want[0], rtol=0, atol=2e-4)
        torch.testing.assert_close(got[1], want[1], rtol=0, atol=2e-4)


def test_sampled_kl_matches_exact_one_token_kl(tiny_model_dir, tok):
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
    est = sampled_kl(policy, reference, tok, [prompt] * 600, max_new_tokens=1, seed=0)
    assert exact > 0.05
    assert abs(est["mean"] - exact) < 4 * est["stderr"] + 1e-3
    assert est["samples"] == 600


# ------------------------------------------------------------------------------ a user's model, prompts and RM
@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    """A tiny reward model with its *own* tokenizer (scored through texts, never the policy's ids)."""
    out = tmp_path_factory.mktemp("rm")
    rm_tok = train_tokenizer(corpus(300, seed=7), out, vocab_size=280)
    cfg = tiny_llama_config(rm_tok, hidden_size=64, layers=1, heads=1)
    cfg.num_labels = 1
    torch.manual_seed(5)
    LlamaForSequenceClassification(cfg).save_pretrained(str(out))
    return out


def test_rm_scored_eval_of_a_user_model(tiny_model_dir, tok, rm_dir, tmp_path):
    rm = RewardModel.from_pretrained(rm_dir)
    assert rm.tokenizer.get_vocab() != tok.get_vocab()
    cfg = EvalConfig(num_prompts=8, max_new_tokens=10, temperature=1.0)
    aligned = _perturbed(load_model(tiny_model_dir), scale=0.2, seed=4)
    r = evaluate(
        aligned, tok, USER_PROMPTS, cfg, reward_model=rm_dir, reference=tiny_model_dir, out_dir=tmp_path, seed=1
    )
    assert r["reward_source"] == "reward_model" and r["reward_model"] == str(rm_dir) and "gold_reward" not in r
    responses = [s["response"] for s in r["samples"]]
    scores = rm.score_texts(USER_PROMPTS, responses).tolist()
    n = len(scores)
    mean = sum(scores) / n
    half = 1.96 * math.sqrt(sum((x - mean) ** 2 for x in scores) / (n - 1)) / math.sqrt(n)
    assert r["reward"]["mean"] == pytest.approx(mean, abs=1e-6)
    assert r["reward"]["ci95"] == pytest.approx([mean - half, mean + half], abs=1e-6)
    assert [s["score"] for s in r["samples"]] == pytest.approx(scores, abs=1e-6)
    assert r["kl"]["mean"] > 0 and r["kl"]["samples"] == 8

    # win rate: the baseline repeats half of the aligned responses (ties) and answers the others with its own
    baseline = responses[:4] + generate(tiny_model_dir, tok, USER_PROMPTS[4:], max_new_tokens=10)
    w = evaluate(aligned, tok, USER_PROMPTS, cfg, reward_model=rm, baseline=baseline, seed=1)["win_rate"]
    base_scores = rm.score_texts(USER_PROMPTS, baseline).tolist()
    wins = sum(a > b for a, b in zip(scores, base_scores))
    ties = sum(a == b for a, b in zip(scores, base_scores))
    assert ties >= 4 and (w["wins"], w["ties"]) == (wins, ties)
    assert w["rate"] == pytest.approx((wins + 0.5 * ties) / n)
    assert w["rate"] != pytest.approx(wins / n) and w["baseline_reward"]["mean"] == pytest.approx(
        sum(base_scores) / n, abs=1e-6
    )


def test_user_prompts_without_a_reward_model_report_kl_and_lengths(tiny_model_dir, tok):
    r = evaluate(
        tiny_model_dir,
        tok,
        USER_PROMPTS[:3],
        EvalConfig(max_new_tokens=6),
        baseline=tiny_model_dir,
        reference=tiny_model_dir,
        out_dir=None,
    )
    assert r["reward_source"] is None and "reward" not in r and "win_rate" not in r
    assert abs(r["kl"]["mean"]) < 1e-6 and r["mean_response_tokens"] > 0
    assert all("score" not in s for s in r["samples"])


def test_eval_prompts_from_any_table(tmp_path, tok, tiny_model_dir):
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "spell cat"}]
    rows = [
        {"prompt": "the cat sat", "response": "ok", "score": 0.5},
        {"prompt": "the cat sat", "response": "no", "score": 0.1},
    ]
    (tmp_path / "scored.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_eval_prompts(tmp_path / "scored.jsonl") == ["the cat sat"]  # distinct prompts, other columns ignored
    (tmp_path / "chat.jsonl").write_text(json.dumps({"prompt": chat}) + "\n")
    assert read_eval_prompts(tmp_path / "chat.jsonl") == [chat]
    pd.DataFrame({"prompt": ["a dog", "a cat"]}).to_parquet(tmp_path / "p.parquet")
    pd.DataFrame({"prompt": ["a dog", "a cat"]}).to_csv(tmp_path / "p.csv", index=False)
    assert read_eval_prompts(tmp_path / "p.parquet") == read_eval_prompts(tmp_path / "p.csv") == ["a dog", "a cat"]
    kept, dropped = fit_prompts(tok, ["a dog", "the cat " * 40], max_tokens=20)
    assert kept == ["a dog"] and dropped == 1
    # prompts are rendered as training renders them: a string is one user message
    model = load_model(tiny_model_dir)
    as_chat = generate(model, tok, [[{"role": "user", "content": "spell cat"}]], max_new_tokens=6)
    assert as_chat == generate(model, tok, ["spell cat"], max_new_tokens=6)
    assert generate_ids(model, tok, [chat], max_new_tokens=3) != []


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
    rows = train_sft(
        model, tok, pairs, SFTConfig(steps=40, batch_size=2, lr=3e-3, warmup_steps=5, log_every=10), log=None
    )
    assert rows[-1]["loss"] < 0.1 * rows[0]["loss"]
    after = generate(model, tok, [p for p, _ in pairs], max_new_tokens=8)
    assert after == ["5", "c a t"] and before != after


def test_plots_write_pngs(tmp_path):
    run = {"gold_reward": mean_ci95([0.2, 0.4, 0.6]), "win_rate": {"rate": 0.7}}  # an eval.json of before RM scoring
    rm_runs = {
        k: {"reward": mean_ci95(v), "reward_source": "reward_model"}
        for k, v in (("base", [-1.5, 0.3, 2.0]), ("aligned", [0.5, 1.0, 4.0]))
    }
    assert plot_runs(rm_runs, tmp_path / "rm.png").stat().st_size > 1000
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "eval.json").write_text(json.dumps({"gold_reward": mean_ci95([0.5, 0.9])}))
    out = plot_runs({"una": run, "base": tmp_path / "b"}, tmp_path / "runs.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(
        "".join(
            json.dumps(
                {
                    "step": i,
                    "loss": 1 / i,
                    "reward_mean": i / 10,
                    "tokens_per_s": 9,
                    **({"eval_reward": i, "eval_reward_ci_low": 0} if i % 2 == 0 else {}),
                }
            )
            + "\n"
            for i in range(1, 6)
        )
    )
    curve = plot_metrics(metrics, tmp_path / "curve.png")
    assert curve.read_bytes()[:4] == b"\x89PNG" and curve.stat().st_size > 1000
    with pytest.raises(ValueError):
        plot_runs({}, tmp_path / "none.png")


def test_heldout_prompts_are_evaluable():
    for p in sample_prompts(64, seed=42, split="heldout"):
        assert 0.0 <= gold_score(p, "") <= 1.0
