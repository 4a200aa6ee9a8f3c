"""Rollout features: group reward normalization, truncated completions, stop strings and top-k (HF engine), their
config checks. References are computed here by hand (plain python / a plain HF forward).

.venv/bin/python -m pytest tests/unit/test_rollout_features.py -q        (the vLLM side: test_online_features.py)
"""

from __future__ import annotations

import types

import pytest
import torch
from rollout_refs import group_reference, hand_cut, peaky_policy, probe_prompts, sigmoid, stop_strings_from, topk_sets
from transformers import AutoTokenizer

from una_hpc.config import Config, ConfigError, validate_config
from una_hpc.config_checks import config_errors, config_warnings
from una_hpc.losses import group_advantages, normalize_rewards
from una_hpc.rollout import HFEngine, Rollout, SamplingSettings, max_logprob_drift, rollout_logps
from una_hpc.rollout.stops import stop_cut
from una_hpc.rollout.truncation import handle_truncated

TOL = 1e-4  # fp32 nats per sequence, engine logprob sums vs the trainer's kernel (as test_rollout_hf.py)


@pytest.mark.parametrize("method", ["group", "group_std"])
def test_group_normalization_equals_hand_reference(method):
    # groups need not be contiguous or equally large (rollout.truncated=drop removes samples); a flat group, a
    # single-sample group and an uneven one
    rewards = [1.0, 2.0, 4.5, -3.0, 0.25, 0.25, 0.25, 7.0, 2.0, -1.0]
    groups = [0, 0, 0, 1, 2, 2, 2, 3, 1, 0]
    want = group_reference(rewards, groups, std=method == "group_std")
    got = group_advantages(torch.tensor(rewards), groups, std=method == "group_std")
    assert got.tolist() == pytest.approx(want, abs=1e-6)
    targets = normalize_rewards(torch.tensor(rewards), method, groups=torch.tensor(groups))
    assert targets.tolist() == pytest.approx([sigmoid(a) for a in want], abs=1e-6)
    assert targets[4:7].tolist() == [0.5, 0.5, 0.5] and targets[7].item() == 0.5  # no signal: the UNA midpoint
    with pytest.raises(ValueError, match="needs the group"):
        normalize_rewards(torch.tensor(rewards), method)


def test_ppo_sequence_rewards_are_unsquashed_group_advantages():
    from una_hpc.trainer.ppo_setup import sequence_rewards

    rewards, groups = [0.5, 2.0, -1.0, 3.0, 3.5, 0.0], [0, 0, 0, 1, 1, 1]
    rollouts = [_rollout(g, "stop") for g in groups]
    cfg = Config()
    for method in ("group", "group_std"):
        cfg.loss.reward_normalize = method
        got = sequence_rewards(torch.tensor(rewards), rollouts, cfg)
        assert got.tolist() == pytest.approx(group_reference(rewards, groups, std=method == "group_std"), abs=1e-6)
    cfg.loss.reward_normalize = "sigmoid"  # the default: PPO keeps its raw scores
    assert sequence_rewards(torch.tensor(rewards), rollouts, cfg).tolist() == rewards


def _rollout(i: int, finish: str) -> Rollout:
    return Rollout(i, 0, [1], [5, 6], [-1.0, -1.0], finish)


def test_truncated_keep_penalty_drop():
    rollouts = [_rollout(0, "stop"), _rollout(0, "length"), _rollout(1, "length"), _rollout(1, "stop")]
    rewards = torch.tensor([0.9, 0.3, 2.0, -1.0])
    keep, r, n = handle_truncated(rollouts, rewards, "keep", penalty=5.0)
    assert (keep, r.tolist(), n) == ([0, 1, 2, 3], rewards.tolist(), 2)
    keep, r, n = handle_truncated(rollouts, rewards, "penalty", penalty=0.5)
    assert (keep, n) == ([0, 1, 2, 3], 2) and r.tolist() == pytest.approx([0.9, -0.2, 1.5, -1.0])
    # loss.reward_normalize=none: rewards must stay in [0, 1], so a penalized one stops at 0
    _, r, _ = handle_truncated(rollouts[:2], rewards[:2], "penalty", penalty=0.5, clamp_unit=True)
    assert r.tolist() == pytest.approx([0.9, 0.0])
    keep, r, n = handle_truncated(rollouts, rewards, "drop")
    assert (keep, r.tolist(), n) == ([0, 3], [rewards[0].item(), rewards[3].item()], 2)
    # all truncated: nothing would be left to train on, so drop keeps them
    keep, r, n = handle_truncated(rollouts[1:3], rewards[1:3], "drop")
    assert (keep, n) == ([0, 1], 2)


def test_config_rules_are_one_line_each():
    def errors(**over) -> list[str]:
        cfg = Config()
        for key, value in over.items():
            section, name = key.split("__")
            setattr(getattr(cfg, section), name, value)
        return config_errors(cfg)

    online = dict(loss__name="una_online", trainer__max_length=128)
    assert errors(**online, loss__reward_normalize="group_std") == []
    (e,) = errors(**online, loss__reward_normalize="group", rollout__samples_per_prompt=1)
    assert "rollout.samples_per_prompt >= 2" in e
    (e,) = errors(loss__name="ppo", trainer__max_length=128, rollout__truncated="drop")
    assert "rollout.truncated=drop" in e and "penalty" in e
    (e,) = errors(**online, rollout__stop=["###", ""])
    assert e.startswith("config key rollout.stop:")
    (e,) = errors(**online, rollout__top_k=-2)
    assert e.startswith("config key rollout.top_k:")
    (e,) = errors(**online, rollout__eval_every=3, trainer__log_every=2)
    assert "multiple of trainer.log_every=2" in e
    (e,) = errors(**online, rollout__eval_every=2, data__path="x.jsonl")
    assert "data.eval_path" in e
    assert all("\n" not in x for x in errors(**online, rollout__stop=[""], rollout__top_k=-5))
    cfg = Config()
    cfg.loss.name, cfg.trainer.max_length, cfg.loss.reward_normalize = "ppo", 128, "zscore"
    cfg.rollout.truncated_penalty = 2.0
    warned = config_warnings(cfg)
    assert any("loss.reward_normalize=zscore is ignored by loss.name=ppo" in w for w in warned)
    assert any("rollout.truncated_penalty=2 is ignored by rollout.truncated=keep" in w for w in warned)
    cfg.loss.reward_normalize = "group"
    assert not any("reward_normalize" in w for w in config_warnings(cfg))
    with pytest.raises(ConfigError):
        validate_config(Config(loss=cfg.loss, rollout=cfg.rollout.__class__(top_k=-3)), warn=False)


# ------------------------------------------------------------------------------------------------ stop strings
@pytest.fixture(scope="module")
def hf(tiny_model_dir):
    ps = probe_prompts(tiny_model_dir)
    model = peaky_policy(tiny_model_dir, ps)
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    eos = model.config.eos_token_id
    engine = HFEngine(model, eos_token_ids=[eos], pad_token_id=model.config.pad_token_id, max_length=256, tokenizer=tok)
    return model, engine, ps, tok


def test_stop_cut_equals_hand_rule(hf):
    _, engine, ps, tok = hf
    rollouts = engine.generate(ps, n=4, params=SamplingSettings(max_new_tokens=24, seed=3))
    stops = stop_strings_from(tok, rollouts)
    cuts = [stop_cut(tok, stops, r.prompt_ids, r.completion_ids) for r in rollouts]
    assert cuts == [hand_cut(tok, stops, r.prompt_ids, r.completion_ids) for r in rollouts]
    slow = types.SimpleNamespace(decode=tok.decode)  # a tokenizer without DecodeStream: the full-decode path
    assert cuts == [stop_cut(slow, stops, r.prompt_ids, r.completion_ids) for r in rollouts]
    assert any(c is not None for c in cuts) and any(c is None for c in cuts)


def test_hf_engine_stops_where_the_rule_cuts(hf):
    # The stopping criterion only ends rows early: every sampling step still draws for the whole batch, so with the
    # same seed each completion is the unstopped one cut by the rule, and the cut ones finish as "stop".
    model, engine, ps, tok = hf
    free = engine.generate(ps, n=4, params=SamplingSettings(max_new_tokens=24, seed=5))
    stops = stop_strings_from(tok, free)
    stopped = engine.generate(ps, n=4, params=SamplingSettings(max_new_tokens=24, seed=5, stop=tuple(stops)))
    n_cut = 0
    for a, b in zip(free, stopped):
        cut = hand_cut(tok, stops, a.prompt_ids, a.completion_ids)
        want = a.completion_ids if cut is None else a.completion_ids[:cut]
        assert b.completion_ids == want and b.logprobs == pytest.approx(a.logprobs[: len(want)], abs=1e-5)
        assert b.finish_reason == ("stop" if cut is not None else a.finish_reason)
        n_cut += cut is not None
    assert n_cut > 0
    assert max_logprob_drift(stopped, rollout_logps(model, stopped, backend="torch")) < TOL
    with pytest.raises(ValueError, match="tokenizer"):
        HFEngine(model, eos_token_ids=[2], pad_token_id=0).generate(ps, 1, SamplingSettings(stop=("a",)))


# ------------------------------------------------------------------------------------------------ top-k
def test_top_k(hf):
    model, engine, ps, _ = hf
    greedy = engine.generate(ps, n=1, params=SamplingSettings(max_new_tokens=16, temperature=0.0))
    one = engine.generate(ps, n=2, params=SamplingSettings(max_new_tokens=16, temperature=1.3, top_k=1, seed=2))
    assert [r.completion_ids for r in one] == [g.completion_ids for g in greedy for _ in range(2)]
    k = 3
    sampled = engine.generate(ps, n=4, params=SamplingSettings(max_new_tokens=16, temperature=1.5, top_k=k, seed=4))
    free = engine.generate(ps, n=4, params=SamplingSettings(max_new_tokens=16, temperature=1.5, top_k=-1, seed=4))
    outside = 0
    for r, f in zip(sampled, free):
        for tok, allowed in zip(r.completion_ids, topk_sets(model, r, k)):
            assert tok in allowed
        outside += sum(t not in a for t, a in zip(f.completion_ids, topk_sets(model, f, k)))
    assert outside > 0  # without top-k, temperature 1.5 does leave the top 3: the constraint above is not vacuous
    # logprobs stay the policy's raw ones whatever top-k does to sampling
    assert max_logprob_drift(sampled, rollout_logps(model, sampled, backend="torch")) < TOL
