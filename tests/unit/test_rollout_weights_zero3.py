"""zero3_weights_for_sync: the same (name, tensor) stream as policy_weights_for_sync, gathered bucket by bucket.

    .venv/bin/python -m pytest tests/unit/test_rollout_weights_zero3.py -q

A fake `gather` stands in for deepspeed.zero.GatheredParameters and records which parameters are gathered while
each tensor is handed out; the parameters are marked as ZeRO-3 ones (ds_numel). The real ZeRO-3 path (2 ranks,
LoRA, engine log-probs equal to the trainer's) is tests/distributed/test_online_dp.py.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from test_rollout_weights import lora_model
from transformers import LlamaConfig, LlamaForCausalLM

from una_hpc.rollout.weights import policy_weights_for_sync, zero3_weights_for_sync


class FakeGather:
    def __init__(self) -> None:
        self.live: list = []
        self.buckets = 0

    @contextlib.contextmanager
    def __call__(self, params):
        assert not self.live, "buckets must not overlap"
        self.live, self.buckets = list(params), self.buckets + 1
        try:
            yield
        finally:
            self.live = []

    def live_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.live)


def mark_zero3(model) -> None:
    for p in model.parameters():
        p.ds_numel = p.numel()


def stream(model, bucket_bytes: int):
    """(name, value, bytes gathered when it was handed out), consuming like the engine: a copy per tensor."""
    gather = FakeGather()
    out = [(n, t.clone(), gather.live_bytes()) for n, t in zero3_weights_for_sync(model, bucket_bytes, gather)]
    return out, gather


@pytest.mark.parametrize("lora", [False, True])
def test_same_weights_as_unpartitioned_sync_within_bounded_buckets(tiny_model_dir, lora):
    if lora:
        model = lora_model(tiny_model_dir)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    expected = {n: t.clone() for n, t in policy_weights_for_sync(model)}
    mark_zero3(model)
    largest_unit = max(p.numel() * p.element_size() for p in model.parameters()) * 3  # a LoRA layer: W, A, B
    bucket = 64 * 1024
    got, gather = stream(model, bucket)
    assert [n for n, *_ in got] == list(expected)  # same names, same order: LoRA merged, base names
    for name, value, _ in got:
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0)
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    assert gather.buckets > 3 and max(b for *_, b in got) <= max(bucket, largest_unit) < total


def test_tied_weights_gathered_and_yielded_once():
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=1,
        num_key_value_heads=1,
        head_dim=64,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    mark_zero3(model)
    got, _ = stream(model, 10**9)  # one bucket
    names = [n for n, *_ in got]
    assert "model.embed_tokens.weight" in names and "lm_head.weight" not in names
    assert names == [n for n, _ in policy_weights_for_sync(model)]
