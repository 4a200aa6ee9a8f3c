"""Evaluation on held-out prompts: reward with a 95% interval, win rate against a baseline, KL to a reference.

    .venv/bin/python -m pytest tests/unit/test_evaluate.py -q      # its tests; from python:
    prompts = read_eval_prompts("prompts.jsonl")                   # any table with a `prompt` column
    evaluate("runs/x/final", None, prompts, EvalConfig(), baseline="base_dir", reference="base_dir",
             reward_model="rm_dir", out_dir="runs/x")

- Prompts: rendered exactly as training renders them (una_hpc.data.tokenize.encode_prompts: the tokenizer's chat
  template with the generation prompt; strings are one user message, message lists are used as they are).
- Responses: generated on the first `eval_cfg.num_prompts` prompts, batched with left padding, greedy when
  `eval_cfg.temperature` is 0 (else sampled at that temperature with top_k/top_p off, seeded).
- Reward (`pick_scorer`): the exact gold reward of the eval.gold_reward hook ("module:function", the embedded
  task's una_hpc.task.grammar:gold_rewards when the entry points filled it) when it knows the prompts (it answers
  None otherwise; online_common.gold_rewards asks the same hook); otherwise the reward model's score of the
  (prompt, response) texts (`RewardModel.score_texts`, so the RM may use another tokenizer); with neither, no reward
  (KL and lengths only). Interval: normal approximation, mean +- 1.96 * sample std / sqrt(n) (over prompts).
- Win rate against `baseline` (a model, a model dir, or its responses): the baseline generates on the same prompts
  with the same settings; per prompt a higher score wins 1, a tie 0.5. Needs a reward.
- KL(policy || reference): one temperature-1 sample per prompt from the policy (whatever `eval_cfg.temperature`:
  the estimator needs the policy's own distribution), log-ratios through the fused op (una_hpc.trainer.eval_kl).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerBase

from ..config import EvalConfig
from ..data.convert import prompts_of
from ..data.formats import Prompt
from ..data.io import load_table
from ..data.tokenize import encode_prompts
from ..hooks import load_function
from ..hub import local_dir
from ..models.policy import load_tokenizer
from ..rollout.reward import RewardModel
from .eval_kl import Reference, eval_mode, kl_of_samples

ModelLike = nn.Module | str | Path


def load_model(model: ModelLike, device: str | torch.device | None = None) -> nn.Module:
    """A causal LM: the given module as it is, or loaded (fp32, eval mode) from an HF model dir onto `device`."""
    if isinstance(model, (str, Path)):
        model = AutoModelForCausalLM.from_pretrained(
            str(local_dir(str(model), setting="eval model")), dtype=torch.float32
        ).eval()
        if device is not None:
            model = model.to(device)
    return model


def read_eval_prompts(path: str | Path, split: str = "train") -> list[Prompt]:
    """Distinct prompts of a jsonl/json/parquet/csv file or save_to_disk dir with a `prompt` column (a string or a
    message list; other columns ignored) or a conversational `messages` column; one-line DataErrors otherwise.
    `split` picks the split of a dir of splits or a DatasetDict (data.eval_split)."""
    table = load_table(path, split)
    if "prompt" in table.column_names:  # a scored/pairwise table works too: only its prompts are read
        table = table.select_columns(["prompt"])
    return prompts_of(table, "conversational", str(path))


def fit_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt], max_tokens: int
) -> tuple[list[Prompt], int]:
    """The prompts whose rendered ids fit `max_tokens` (data.max_prompt_length), and how many were dropped."""
    ids = encode_prompts(tokenizer, list(prompts))
    kept = [p for p, x in zip(prompts, ids) if len(x) <= max_tokens]
    return kept, len(prompts) - len(kept)


def _left_pad(seqs: Sequence[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s)
        mask[i, width - len(s) :] = 1
    return ids, mask


@torch.no_grad()
def generate_ids(
    model: ModelLike,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    batch_size: int = 64,
    seed: int = 0,
) -> list[list[int]]:
    """Completion token ids per prompt, cut after the first EOS (which is kept). temperature 0 = greedy."""
    model = load_model(model)
    sample = temperature > 0
    gen_cfg = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        temperature=temperature if sample else None,
        top_k=0 if sample else None,
        top_p=1.0 if sample else None,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    device = next(model.parameters()).device
    encoded = encode_prompts(tokenizer, list(prompts))
    out: list[list[int]] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), eval_mode(model):
        torch.manual_seed(seed)  # the caller's RNG is untouched (fork_rng restores it)
        for start in range(0, len(encoded), batch_size):
            ids, mask = _left_pad(encoded[start : start + batch_size], tokenizer.pad_token_id)
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=gen_cfg)
            for row in gen[:, ids.shape[1] :].tolist():
                cut = row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
                out.append(row[:cut])
    return out


def decode(tokenizer: PreTrainedTokenizerBase, completion_ids: Sequence[int]) -> str:
    return tokenizer.decode(list(completion_ids), skip_special_tokens=True).strip()


def generate(
    model: ModelLike,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    batch_size: int = 64,
    seed: int = 0,
) -> list[str]:
    """Response texts per prompt (see generate_ids)."""
    ids = generate_ids(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        batch_size=batch_size,
        seed=seed,
    )
    return [decode(tokenizer, x) for x in ids]


def sampled_kl(
    policy: nn.Module,
    reference: Reference,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, float]:
    """KL(policy || reference) on one temperature-1 policy sample per prompt (una_hpc.trainer.eval_kl)."""
    samples = generate_ids(
        policy, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=1.0, batch_size=batch_size, seed=seed
    )
    return kl_of_samples(
        policy,
        reference,
        encode_prompts(tokenizer, list(prompts)),
        samples,
        pad_id=tokenizer.pad_token_id,
        batch_size=batch_size,
    )


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
    return {"rate": (wins + 0.5 * ties) / len(scores), "wins": wins, "ties": ties, "losses": len(scores) - wins - ties}


# ------------------------------------------------------------------------------------------------ reward
GoldReward = Callable[[Sequence[Prompt], Sequence[str]], "list[float] | None"]
"""The eval.gold_reward hook: exact rewards of (prompt, response) pairs, or None for prompts it does not know."""


def gold_function(eval_cfg: EvalConfig) -> GoldReward | None:
    """The function eval.gold_reward names, or None when it is empty."""
    return load_function(eval_cfg.gold_reward, setting="eval.gold_reward")


@dataclass
class Scorer:
    """How responses are scored: the gold reward or a reward model, batched over (prompt, response) texts."""

    source: str
    """"gold" or "reward_model"."""
    score: Callable[[Sequence[Prompt], Sequence[str]], list[float]]
    detail: str = ""
    """The reward model's path (for eval.json)."""


def pick_scorer(
    prompts: Sequence[Prompt],
    reward_model: RewardModel | str | Path | None = None,
    *,
    gold: GoldReward | None = None,
    device: str | torch.device = "cpu",
) -> Scorer | None:
    """The gold reward when it knows every prompt, else the reward model (a RewardModel or its dir), else None."""
    # Whether the hook knows the prompts does not depend on the responses: ask with empty ones.
    if gold is not None and prompts and gold(list(prompts), [""] * len(prompts)) is not None:
        return Scorer("gold", lambda ps, rs: gold(list(ps), list(rs)))
    if reward_model is None or reward_model == "":
        return None
    if isinstance(reward_model, (str, Path)):
        path = str(reward_model)
        reward_model = RewardModel.from_pretrained(path, device=device)
    else:
        path = getattr(reward_model.model.config, "_name_or_path", "") or "given"
    rm = reward_model
    return Scorer("reward_model", lambda ps, rs: rm.score_texts(list(ps), list(rs)).tolist(), path)


# ------------------------------------------------------------------------------------------------ evaluate
def evaluate(
    model_dir_or_model: ModelLike,
    tokenizer: PreTrainedTokenizerBase | None,
    prompts: Sequence[Prompt],
    eval_cfg: EvalConfig,
    *,
    baseline: ModelLike | list[str] | None = None,
    reference: ModelLike | Reference | None = None,
    reward_model: RewardModel | str | Path | None = None,
    out_dir: str | Path | None = None,
    seed: int = 0,
    batch_size: int = 64,
    baseline_name: str | None = None,
    device: str | torch.device | None = None,
) -> dict:
    """Evaluate a policy on held-out prompts; writes `eval.json` into `out_dir` (default: the model dir when a
    dir was given; nothing is written for an in-memory model without `out_dir`). Returns the same dict.

    `baseline`: a model, model dir, or a list of the baseline's responses (one per evaluated prompt), named in
    eval.json by `baseline_name` (default: the dir, or "given").
    `reference`: a model, model dir, or `PolicyPair.reference`-style context factory, for the KL estimate.
    `reward_model`: a RewardModel or its dir, used when eval_cfg.gold_reward does not know the prompts (see
    pick_scorer). Without any reward there is no win rate either.
    `device`: where models loaded from dirs go (default: the policy's device, cpu for a policy dir). In-memory
    models keep their device and train/eval mode."""
    if tokenizer is None:
        if not isinstance(model_dir_or_model, (str, Path)):
            raise ValueError("pass a tokenizer when the model is not a model dir")
        tokenizer = load_tokenizer(model_dir_or_model)
    prompts = list(prompts)[: eval_cfg.num_prompts]
    if not prompts:
        raise ValueError("no prompts to evaluate on")
    policy = load_model(model_dir_or_model, device)
    device = device or next(policy.parameters()).device  # what is loaded from a dir joins the policy
    scorer = pick_scorer(prompts, reward_model, gold=gold_function(eval_cfg), device=device)
    gen = dict(
        max_new_tokens=eval_cfg.max_new_tokens, temperature=eval_cfg.temperature, batch_size=batch_size, seed=seed
    )
    ids = generate_ids(policy, tokenizer, prompts, **gen)
    responses = [decode(tokenizer, x) for x in ids]
    result: dict = {
        "num_prompts": len(prompts),
        "max_new_tokens": eval_cfg.max_new_tokens,
        "temperature": eval_cfg.temperature,
        "seed": seed,
        "reward_source": scorer.source if scorer else None,
        "mean_response_tokens": sum(len(x) for x in ids) / len(ids),
        "eos_rate": sum(bool(x) and x[-1] == tokenizer.eos_token_id for x in ids) / len(ids),
    }
    scores: list[float] | None = None
    if scorer is not None:
        scores = scorer.score(prompts, responses)
        result["reward"] = mean_ci95(scores)
        if scorer.source == "gold":
            result["gold_reward"] = result["reward"]  # the key eval.json of the embedded task always had
        else:
            result["reward_model"] = scorer.detail
    if baseline is not None and scorer is not None:
        if isinstance(baseline, (list, tuple)):
            base_responses = list(baseline)[: len(prompts)]
        else:  # a model dir or any model with .generate (a PeftModel too)
            base_responses = generate(load_model(baseline, device), tokenizer, prompts, **gen)
        base_scores = scorer.score(prompts, base_responses)
        result["win_rate"] = win_rate(scores, base_scores)
        result["win_rate"]["baseline"] = baseline_name or (
            str(baseline) if isinstance(baseline, (str, Path)) else "given"
        )
        result["win_rate"]["baseline_reward"] = mean_ci95(base_scores)
    if reference is not None:
        ref = load_model(reference, device) if isinstance(reference, (str, Path)) else reference
        result["kl"] = sampled_kl(
            policy, ref, tokenizer, prompts, max_new_tokens=eval_cfg.max_new_tokens, batch_size=batch_size, seed=seed
        )
    result["samples"] = [
        {"prompt": p, "response": r, **({"score": scores[i]} if scores is not None else {})}
        for i, (p, r) in enumerate(zip(prompts, responses))
    ]
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
