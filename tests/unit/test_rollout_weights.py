"""policy_weights_for_sync: plain names, tied weights, LoRA merged on the fly without touching the training model.

.venv/bin/python -m pytest tests/unit/test_rollout_weights.py -q
"""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from una_hpc.rollout import policy_weights_for_sync

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lora_model(model_dir, seed: int = 1, **lora_kwargs):
    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, **lora_kwargs))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # B = 0 at init would make the merge trivial
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return peft


def test_plain_model_yields_its_state_dict(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    synced = dict(policy_weights_for_sync(model))
    sd = model.state_dict()
    assert list(synced) == list(sd)
    for name, t in synced.items():
        assert t.data_ptr() == sd[name].data_ptr() and not t.requires_grad  # references, no copies


def test_tied_weights_are_yielded_once():
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
        head_dim=64,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    names = [n for n, _ in policy_weights_for_sync(model)]
    assert "model.embed_tokens.weight" in names and "lm_head.weight" not in names
    assert len(names) == len(set(names))


def test_lora_is_merged_under_base_names_and_model_untouched(tiny_model_dir):
    peft = lora_model(tiny_model_dir)
    before = {n: p.detach().clone() for n, p in peft.named_parameters()}
    synced = dict(policy_weights_for_sync(peft))
    expected = copy.deepcopy(peft).merge_and_unload().state_dict()  # PEFT's own merge, on a copy
    assert list(synced) == list(expected)
    assert not any("lora_" in n or "base_layer" in n for n in synced)
    for name, t in synced.items():
        torch.testing.assert_close(t, expected[name], rtol=0, atol=1e-6)
    q = "model.layers.0.self_attn.q_proj.weight"
    base_q = peft.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight
    assert (synced[q] - base_q).abs().max() > 1e-3  # the adapter really changed the synced weight
    for n, p in peft.named_parameters():  # training model: same values, nothing merged
        assert torch.equal(p, before[n]), n
    assert not any(getattr(m, "merged", False) for m in peft.modules())


def test_disabled_adapter_yields_base_weights(tiny_model_dir):
    peft = lora_model(tiny_model_dir)
    plain = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).state_dict()
    with peft.disable_adapter():
        synced = dict(policy_weights_for_sync(peft))
    assert list(synced) == list(plain)
    for name, t in synced.items():
        assert torch.equal(t, plain[name]), name


def test_merged_tensors_are_never_deduplicated_as_tied(tiny_model_dir):
    # Consumers drop each merged tensor before the next is made; the allocator may reuse its memory, which must not
    # make a later, equally shaped merged weight look like a tied duplicate.
    peft = lora_model(tiny_model_dir)
    names = []
    for name, t in policy_weights_for_sync(peft):
        names.append(name)
        del t
    assert names == list(copy.deepcopy(peft).merge_and_unload().state_dict())


def test_dora_is_rejected_in_one_line(tiny_model_dir):
    peft = lora_model(tiny_model_dir, use_dora=True)
    with pytest.raises(NotImplementedError) as e:
        list(policy_weights_for_sync(peft))
    assert "DoRA" in str(e.value) and "\n" not in str(e.value)
