"""`rollout.reward_fn=module:function`: what the function receives, what it may return, and the one-line errors.

.venv/bin/python -m pytest tests/unit/test_reward_fn.py -q
"""

from __future__ import annotations

import pytest
import torch

from una_hpc.config import ConfigError
from una_hpc.models.policy import load_tokenizer
from una_hpc.rollout.base import Rollout
from una_hpc.rollout.reward_fn import RewardFunction, RewardFunctionError


def _rollouts(tok, prompts: list, completions: list[str], eos: bool) -> list[Rollout]:
    out = []
    for i, text in enumerate(completions):
        ids = tok(text, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if eos else [])
        out.append(
            Rollout(i % len(prompts), i // len(prompts), [1, 2, 3], ids, [0.0] * len(ids), "stop" if eos else "length")
        )
    return out


def test_function_gets_prompts_and_decoded_completions_in_order(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    prompts = ["count to three", [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a cat"}]]
    completions = ["one two three", "the cat sat", "red blue", "cat cat"]
    fn = RewardFunction.load("reward_fns:echo_lengths")
    got = fn.score_rollouts(_rollouts(tok, prompts, completions, eos=True), prompts, tok)
    texts = ["count to three", "be brief a cat"]
    decoded = [tok.decode(tok(c, add_special_tokens=False)["input_ids"]) for c in completions]
    want = [len(texts[i % 2]) + len(decoded[i]) for i in range(4)]  # EOS skipped: not part of the text
    assert got.dtype == torch.float32 and got.tolist() == want

    frac = RewardFunction.load("reward_fns:cat_fraction").score_rollouts(
        _rollouts(tok, prompts, completions, eos=False), prompts, tok
    )
    assert frac.tolist() == pytest.approx([0.0, 1 / 3, 0.0, 1.0])


@pytest.mark.parametrize(
    "name, words",
    [
        ("reward_fns:wrong_length", "returned 5 values for 4 completions"),
        ("reward_fns:not_finite", "completion 0 got nan"),
    ],
)
def test_bad_results_are_one_line(tiny_model_dir, name, words):
    tok = load_tokenizer(tiny_model_dir)
    with pytest.raises(RewardFunctionError) as err:
        RewardFunction.load(name).score_rollouts(_rollouts(tok, ["p"], ["a", "b", "c", "d"], eos=True), ["p"], tok)
    assert words in str(err.value) and name in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("spec", ["reward_fns", "no_such_module_xyz:f", "reward_fns:missing"])
def test_bad_specs_are_config_errors(spec):
    with pytest.raises(ConfigError, match="rollout.reward_fn"):
        RewardFunction.load(spec)


def test_normalize_none_keeps_unit_rewards_and_refuses_others():
    from una_hpc.losses import normalize_rewards

    x = torch.tensor([0.0, 0.25, 1.0])
    assert torch.equal(normalize_rewards(x, "none"), x)
    with pytest.raises(ValueError, match=r"reward_normalize=none needs rewards in \[0, 1\]"):
        normalize_rewards(torch.tensor([0.5, 1.5]), "none")


def test_reward_fn_and_reward_model_together_is_a_config_error():
    from una_hpc.config import load_config

    with pytest.raises(ConfigError, match="rollout.reward_fn=m:f and rollout.reward_model=rm"):
        load_config(None, ["loss.name=una_online", "rollout.reward_fn=m:f", "rollout.reward_model=rm"])
