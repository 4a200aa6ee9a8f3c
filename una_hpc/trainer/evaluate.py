"""Evaluation on held-out prompts of the embedded task: gold reward with a 95% interval, win rate, KL to a reference.

    .venv/bin/python -m pytest tests/unit/test_evaluate.py -q      # its tests; from python:
    evaluate("runs/x/final", None, load_prompts("runs/default/data/heldout.jsonl"), EvalConfig(),
             baseline="runs/default/base", reference="runs/default/base", out_dir="runs/x")

- Responses: generated on the first `eval_cfg.num_prompts` prompts, batched with left padding, greedy when
  `eval_cfg.temperature` is 0 (else sampled at that temperature with top_k/top_p off, seeded).
- Gold reward: the synthetic task's exact gold score per response (una_hpc.data.synthetic.gold_score) unless a
  `scorer` is given. Interval: normal approximation, mean +- 1.96 * sample std / sqrt(n) (over prompts).
- Win rate against `baseline` (a model, a model dir, or its responses): the baseline generates on the same prompts
  with the same settings; per prompt a higher score wins 1, a tie 0.5.
- KL(policy || reference): one sample per prompt from the policy at temperature 1 (no top-k/top-p, so the samples
  follow the policy's own distribution), estimate = mean over samples of sum_t [log pi(y_t|..) - log ref(y_t|..)]
  over the sampled completion tokens (EOS included, generation capped at max_new_tokens: it is the KL of the
  length-capped sequence distributions). Unbiased; reported with its standard error. Temperature 1 regardless of
  `eval_cfg.temperature`, because the estimator needs samples from the policy itself.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from ..config import EvalConfig
from ..data.synthetic import ATTRIBUTES, family_of, gold_attributes
from ..losses.helpsteer import DEFAULT_ATTRIBUTE_WEIGHTS, combine_attributes
from .sft import encode_prompt

ModelLike = PreTrainedModel | str | Path


def load_model(model: ModelLike) -> PreTrainedModel:
    """A causal LM in eval mode: the given one, or loaded (fp32) from an HF model dir."""
    if isinstance(model, (str, Path)):
        model = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
    return model.eval()


def load_prompts(path: str | Path) -> list[str]:
    """The `prompt` field of every row of a jsonl file."""
    with open(path) as f:
        return [json.loads(line)["prompt"] for line in f if line.strip()]


def _left_pad(seqs: Sequence[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s)
        mask[i, width - len(s):] = 1
    return ids, mask


@torch.no_grad()
def generate_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], *,
                 max_new_tokens: int, temperature: float = 0.0, batch_size: int = 64,
                 seed: int = 0) -> list[list[int]]:
    """Completion token ids per prompt, cut after the first EOS (which is kept). temperature 0 = greedy."""
    model = load_model(model)
    sample = temperature > 0
    gen_cfg = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=sample, temperature=temperature if sample else None,
        top_k=0 if sample else None, top_p=1.0 if sample else None, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    device = next(model.parameters()).device
    out: list[list[int]] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # caller's RNG untouched
        torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            encoded = [encode_prompt(tokenizer, p) for p in prompts[start:start + batch_size]]
            ids, mask = _left_pad(encoded, tokenizer.pad_token_id)
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 generation_config=gen_cfg)
            for row in gen[:, ids.shape[1]:].tolist():
                cut = row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
                out.append(row[:cut])
    return out


def decode(tokenizer: PreTrainedTokenizerBase, completion_ids: Sequence[int]) -> str:
    return tokenizer.decode(list(completion_ids), skip_special_tokens=True).strip()


def generate(model: ModelLike, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], *, max_new_tokens: int,
             temperature: float = 0.0, batch_size: int = 64, seed: int = 0) -> list[str]:
    """Response texts per prompt (see generate_ids)."""
    ids = generate_ids(load_model(model), tokenizer, prompts, max_new_tokens=max_new_tokens,
                       temperature=temperature, batch_size=batch_size, seed=seed)
    return [decode(tokenizer, x) for x in ids]


@torch.no_grad()
def completion_logps(model: PreTrainedModel, prompt_ids: Sequence[list[int]], completion_ids: Sequence[list[int]],
                     pad_id: int, batch_size: int = 64) -> Tensor:
    """[N] float64: sum of log p(completion token | prefix) per sequence (right-padded forward passes)."""
    device = next(model.parameters()).device
    out = []
    for s in range(0, len(prompt_ids), batch_size):
        seqs = [p + c for p, c in zip(prompt_ids[s:s + batch_size], completion_ids[s:s + batch_size])]
        width = max(len(x) for x in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for i, (p, c) in enumerate(zip(prompt_ids[s:s + batch_size], completion_ids[s:s + batch_size])):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            mask[i, : len(p) + len(c)] = 1
            labels[i, len(p): len(p) + len(c)] = torch.tensor(c, dtype=torch.long)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        tgt = labels[:, 1:].to(device)
        tok = logp.gather(-1, tgt.clamp_min(0).unsqueeze(-1)).squeeze(-1) * (tgt != -100)
        out.append(tok.sum(-1).double().cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def mean_ci95(values: Sequence[float]) -> dict[str, float | list[float]]:
    """Mean, sample std and the normal-approximation 95% interval mean +- 1.96 std / sqrt(n)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarize")
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    half = 1.96 * std / math.sqrt(n)
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "n": n, "method": "normal"}


def win_rate(scores: Sequence[float], baseline_scores: Sequence[float]) -> dict[str, float]:
    """Per-prompt comparison: win 1, tie 0.5, loss 0; rate = mean."""
    if len(scores) != len(baseline_scores) or not scores:
        raise ValueError("win rate needs two equally long, non-empty score lists")
    wins = sum(a > b for a, b in zip(scores, baseline_scores))
    ties = sum(a == b for a, b in zip(scores, baseline_scores))
    return {"rate": (wins + 0.5 * ties) / len(scores), "wins": wins, "ties": ties,
            "losses": len(scores) - wins - ties}


def kl_estimate(policy: PreTrainedModel, reference: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                prompts: Sequence[str], *, max_new_tokens: int, batch_size: int = 64,
                seed: int = 0) -> dict[str, float]:
    """Monte-Carlo KL(policy || reference) on temperature-1 policy samples (see the module docstring)."""
    completions = generate_ids(policy, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=1.0,
                               batch_size=batch_size, seed=seed)
    prompt_ids = [encode_prompt(tokenizer, p) for p in prompts]
    ratio = (completion_logps(policy, prompt_ids, completions, tokenizer.pad_token_id, batch_size)
             - completion_logps(reference, prompt_ids, completions, tokenizer.pad_token_id, batch_size))
    n = ratio.numel()
    std = float(ratio.std()) if n > 1 else 0.0
    return {"mean": float(ratio.mean()), "stderr": std / math.sqrt(n), "samples": n, "temperature": 1.0,
            "method": "mean over policy samples of summed token log-ratios"}


def _score_all(prompts: Sequence[str], responses: Sequence[str], scorer: Callable[[str, str], float] | None,
               weights: Mapping[str, float]) -> tuple[list[float], list[dict[str, int]] | None]:
    if scorer is not None:
        return [float(scorer(p, r)) for p, r in zip(prompts, responses)], None
    attrs = [gold_attributes(p, r) for p, r in zip(prompts, responses)]
    return [combine_attributes(a, weights) for a in attrs], attrs


def evaluate(model_dir_or_model: ModelLike, tokenizer: PreTrainedTokenizerBase | None, prompts: Sequence[str],
             eval_cfg: EvalConfig, *, baseline: ModelLike | list[str] | None = None,
             reference: ModelLike | None = None, out_dir: str | Path | None = None, seed: int = 0,
             batch_size: int = 64, scorer: Callable[[str, str], float] | None = None,
             weights: Mapping[str, float] = DEFAULT_ATTRIBUTE_WEIGHTS) -> dict:
    """Evaluate a policy on held-out prompts; writes `eval.json` into `out_dir` (default: the model dir when a
    dir was given; nothing is written for an in-memory model without `out_dir`). Returns the same dict.

    `baseline`: a model, model dir, or a list of the baseline's responses (one per evaluated prompt).
    `reference`: a model or model dir for the KL estimate. `scorer(prompt, response) -> float` replaces the gold
    reward (then no per-attribute breakdown)."""
    if tokenizer is None:
        if not isinstance(model_dir_or_model, (str, Path)):
            raise ValueError("pass a tokenizer when the model is not a model dir")
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir_or_model))
    prompts = list(prompts)[: eval_cfg.num_prompts]
    if not prompts:
        raise ValueError("no prompts to evaluate on")
    policy = load_model(model_dir_or_model)
    gen = dict(max_new_tokens=eval_cfg.max_new_tokens, temperature=eval_cfg.temperature, batch_size=batch_size,
               seed=seed)
    ids = generate_ids(policy, tokenizer, prompts, **gen)
    responses = [decode(tokenizer, x) for x in ids]
    scores, attrs = _score_all(prompts, responses, scorer, weights)
    result: dict = {
        "num_prompts": len(prompts), "max_new_tokens": eval_cfg.max_new_tokens,
        "temperature": eval_cfg.temperature, "seed": seed,
        "gold_reward": mean_ci95(scores),
        "mean_response_tokens": sum(len(x) for x in ids) / len(ids),
        "eos_rate": sum(bool(x) and x[-1] == tokenizer.eos_token_id for x in ids) / len(ids),
    }
    if attrs is not None:
        result["attributes"] = {a: sum(x[a] for x in attrs) / len(attrs) for a in ATTRIBUTES}
        by_family: dict[str, list[float]] = defaultdict(list)
        for p, s in zip(prompts, scores):
            by_family[family_of(p)].append(s)
        result["families"] = {f: sum(v) / len(v) for f, v in sorted(by_family.items())}
    if baseline is not None:
        if isinstance(baseline, (list, tuple)):
            base_responses = list(baseline)[: len(prompts)]
        else:  # a model dir or any model with .generate (a PeftModel too)
            base_responses = generate(baseline, tokenizer, prompts, **gen)
        base_scores, _ = _score_all(prompts, base_responses, scorer, weights)
        result["win_rate"] = win_rate(scores, base_scores)
        result["win_rate"]["baseline"] = str(baseline) if isinstance(baseline, (str, Path)) else "given"
        result["win_rate"]["baseline_gold_reward"] = mean_ci95(base_scores)
    if reference is not None:
        result["kl"] = kl_estimate(policy, load_model(reference), tokenizer, prompts,
                                   max_new_tokens=eval_cfg.max_new_tokens, batch_size=batch_size, seed=seed)
    result["samples"] = [{"prompt": p, "response": r, "score": s} for p, r, s in zip(prompts, responses, scores)]
    if out_dir is None and isinstance(model_dir_or_model, (str, Path)):
        out_dir = model_dir_or_model
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        path = Path(out_dir) / "eval.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(path)
        result["path"] = str(path)
    return result
