"""HFEngine: sampled-token logprobs equal the trainer's seq_logps, EOS handling, greedy, seeds, live weights.

.venv/bin/python -m pytest tests/unit/test_rollout_hf.py -q
"""

from __future__ import annotations

import pytest
import torch
from rollout_refs import peaky_policy  # tests/rollout_refs.py
from transformers import AutoTokenizer

from una_hpc.data import encode_prompts
from una_hpc.rollout import HFEngine, SamplingSettings, max_logprob_drift, rollout_logps

# fp32 per-sequence tolerance (nats) between engine logprob sums and the trainer's kernel; measured drift ~1e-6.
TOL = 1e-4


def prompts(model_dir) -> list[list[int]]:
    """Chat-templated prompts of three different lengths, as the policy sees them."""
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    texts = ["count one two", "the red cat sat on the mat and", "yes"]
    return encode_prompts(tok, texts)


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    ps = prompts(tiny_model_dir)
    model = peaky_policy(tiny_model_dir, ps)
    eos = model.config.eos_token_id
    engine = HFEngine(model, eos_token_ids=[eos], pad_token_id=model.config.pad_token_id, max_length=256)
    return model, engine, ps, eos


def test_sampled_logprobs_match_trainer_and_eos_is_handled(setup):
    model, engine, ps, eos = setup
    assert len({len(p) for p in ps}) == 3  # different lengths: left padding is exercised
    rollouts = engine.generate(ps, n=4, params=SamplingSettings(max_new_tokens=24, temperature=1.0, seed=3))
    assert [(r.prompt_index, r.sample_index) for r in rollouts] == [(i, j) for i in range(3) for j in range(4)]
    for r in rollouts:
        assert r.prompt_ids == ps[r.prompt_index]
        if r.finish_reason == "stop":
            assert r.completion_ids[-1] == eos and eos not in r.completion_ids[:-1]
        else:
            assert r.finish_reason == "length" and len(r.completion_ids) == 24 and eos not in r.completion_ids
    assert {r.finish_reason for r in rollouts} == {"stop", "length"}
    drift = max_logprob_drift(rollouts, rollout_logps(model, rollouts, backend="torch"))
    assert drift < TOL, drift


def test_temperature_does_not_change_the_returned_logprobs(setup):
    # Logprobs are the policy's (raw logits), whatever the sampling temperature: the trainer's quantity.
    model, engine, ps, _ = setup
    rollouts = engine.generate(ps, n=2, params=SamplingSettings(max_new_tokens=16, temperature=0.5, top_p=0.9, seed=5))
    assert max_logprob_drift(rollouts, rollout_logps(model, rollouts, backend="torch")) < TOL


def test_greedy_equals_unpadded_generate(setup):
    model, engine, ps, eos = setup
    rollouts = engine.generate(ps, n=1, params=SamplingSettings(max_new_tokens=20, temperature=0.0))
    for r in rollouts:
        out = model.generate(
            torch.tensor([r.prompt_ids]),
            do_sample=False,
            max_new_tokens=20,
            top_k=None,
            eos_token_id=eos,
            pad_token_id=model.config.pad_token_id,
        )
        ref = out[0, len(r.prompt_ids) :].tolist()
        assert r.completion_ids == ref[: len(r.completion_ids)] and len(ref) == len(r.completion_ids)


def test_seed_reproducible_and_trainer_rng_untouched(setup):
    _, engine, ps, _ = setup
    params = SamplingSettings(max_new_tokens=12, seed=11)
    state = torch.get_rng_state()
    a = engine.generate(ps, n=2, params=params)
    assert torch.equal(state, torch.get_rng_state())
    b = engine.generate(ps, n=2, params=params)
    c = engine.generate(ps, n=2, params=SamplingSettings(max_new_tokens=12, seed=12))
    assert [r.completion_ids for r in a] == [r.completion_ids for r in b]
    assert [r.completion_ids for r in a] != [r.completion_ids for r in c]


def test_sync_is_noop_engine_samples_the_live_policy(setup):
    model, engine, ps, _ = setup
    model.train()
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.add_(0.5)  # a "training step", no sync call
    try:
        engine.sync_weights(iter(()))
        rollouts = engine.generate(ps, n=2, params=SamplingSettings(max_new_tokens=10, seed=1))
        assert model.training  # eval only during generation
        assert max_logprob_drift(rollouts, rollout_logps(model, rollouts, backend="torch")) < TOL
    finally:
        with torch.no_grad():
            model.model.layers[0].mlp.up_proj.weight.sub_(0.5)
        model.eval()


def test_bad_inputs_are_one_line_errors(setup):
    _, engine, ps, _ = setup
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        engine.generate([ps[0], []], n=1, params=SamplingSettings())
    with pytest.raises(ValueError, match="max length is 256"):
        engine.generate([[1] * 300], n=1, params=SamplingSettings())
    with pytest.raises(ValueError, match="top_p"):
        SamplingSettings(top_p=0.0)
