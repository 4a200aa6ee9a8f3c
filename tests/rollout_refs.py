"""Hand references for the rollout-feature tests (tests/unit/test_rollout_features.py,
tests/integration/test_online_features.py): plain python / a plain HF forward, nothing from una_hpc."""

from __future__ import annotations

import math
import re

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def sigmoid(a: float) -> float:
    return 1 / (1 + math.exp(-a))


def group_reference(rewards: list[float], groups: list[int], std: bool) -> list[float]:
    """GRPO by hand: reward - group mean, / group sample std (n - 1) when asked; a flat or single group gives 0."""
    out = []
    for r, g in zip(rewards, groups):
        xs = [x for x, h in zip(rewards, groups) if h == g]
        mean = sum(xs) / len(xs)
        a = r - mean
        if std:
            s = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
            a = a / s if s > 0 else 0.0
        out.append(a)
    return out


def hand_cut(tok, stops: list[str], prompt: list[int], completion: list[int]) -> int | None:
    """The stop-string rule by hand: the first t whose completion text (decoded after the prompt) holds a stop
    string. Byte-level tokens can end inside a UTF-8 character; such a decode ends in U+FFFD and is not text yet
    (vLLM's streaming detokenizer holds those bytes back the same way)."""
    head = tok.decode(prompt, skip_special_tokens=True)
    for t in range(len(completion)):
        full = tok.decode(prompt + completion[: t + 1], skip_special_tokens=True)
        if not full.endswith("\ufffd") and any(s in full[len(head) :] for s in stops):
            return t + 1
    return None


def stop_strings_from(tok, rollouts) -> list[str]:
    """Two printable stop strings from the middle of two of these completions (so some are cut, some not; the tiny
    random model writes bytes as often as words)."""
    texts = [tok.decode(r.completion_ids, skip_special_tokens=True) for r in rollouts]
    pieces = [m for t in texts for m in re.findall(r"[a-z ]{3,}", t[3:])]
    assert len(pieces) >= 2, texts
    return [pieces[0][:3], pieces[-1][-2:]]


def topk_sets(model, rollout, k: int) -> list[set[int]]:
    """The k highest raw logits at each completion position (plain HF forward)."""
    ids = torch.tensor([rollout.prompt_ids + rollout.completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(rollout.prompt_ids) - 1 : -1]
    return [set(row.topk(k).indices.tolist()) for row in logits]


def probe_prompts(model_dir) -> list[list[int]]:
    """Chat-templated prompts of three lengths, as the policy sees them."""
    from una_hpc.data import encode_prompts

    return encode_prompts(AutoTokenizer.from_pretrained(str(model_dir)), ["count one two", "the red cat sat on", "yes"])


def peaky_policy(model_dir, probe: list[list[int]], seed: int = 0):
    """The tiny random model with noise and a 6x lm_head (sampling is not uniform); EOS gets 0.9x the row of the
    token the model favours on the probe prompts, so about half the samples stop before max_new_tokens."""
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
        model.lm_head.weight.mul_(6.0)
        hidden = model.model(input_ids=torch.tensor([sum(probe, [])])).last_hidden_state[0]
        favoured = (hidden @ model.lm_head.weight.T).mean(0).argmax()
        model.lm_head.weight[model.config.eos_token_id] = model.lm_head.weight[favoured] * 0.9
    return model


def hf_greedy(model, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """HF generate's greedy completion of one prompt (stops at the model's EOS), the reference for an engine's
    temperature-0 rollouts."""
    config = model.config if hasattr(model.config, "eos_token_id") else model.get_base_model().config
    out = model.generate(
        input_ids=torch.tensor([prompt_ids]),
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    return out[0, len(prompt_ids) :].tolist()
