"""Model plumbing: packed rows attend block-diagonally, LoRA reference = adapter off, LoRA merge export.

.venv/bin/python -m pytest tests/unit/test_models.py -q
"""

from __future__ import annotations

import pytest
import torch

from una_hpc.config import ModelConfig
from una_hpc.data.batch import PackedBatch
from una_hpc.feedback import IGNORE_INDEX
from una_hpc.losses import SCORE, SeqTargets
from una_hpc.models.lora import hf_state_dict
from una_hpc.models.policy import build_policy, decoder_hidden, lm_head_weight


def _batch(rows: list[list[list[int]]], pad_id: int = 0) -> PackedBatch:
    """rows of sequences -> PackedBatch with every non-first token labelled (enough for hidden-state checks)."""
    width = max(sum(len(s) for s in r) for r in rows)
    R = len(rows)
    ids = torch.full((R, width), pad_id)
    pos = torch.zeros((R, width), dtype=torch.long)
    seq = torch.zeros((R, width), dtype=torch.long)
    labels = torch.full((R, width), IGNORE_INDEX)
    pad = torch.ones((R, width), dtype=torch.bool)
    s_id = 0
    for r, row in enumerate(rows):
        t = 0
        for s in row:
            n = len(s)
            ids[r, t : t + n] = torch.tensor(s)
            pos[r, t : t + n] = torch.arange(n)
            seq[r, t : t + n] = s_id
            labels[r, t : t + n - 1] = torch.tensor(s[1:])
            pad[r, t : t + n] = False
            t += n
            s_id += 1
    targets = SeqTargets(torch.full((s_id,), SCORE), torch.full((s_id,), -1), torch.full((s_id,), 0.5))
    return PackedBatch(ids, pos, labels, seq, pad, s_id, targets, torch.arange(s_id))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_rows_equal_separate_sequences(tiny_model_dir, attn):
    pair = build_policy(ModelConfig(attn_implementation=attn), tiny_model_dir, torch.device("cpu"), need_ref=False)
    a, b, c = [5, 9, 11, 20, 7], [3, 4, 8], [12, 13, 14, 15, 16, 17]
    with torch.no_grad():
        packed = decoder_hidden(pair.policy, _batch([[a, b], [c]]), attn)
        alone = [decoder_hidden(pair.policy, _batch([[s]]), attn) for s in (a, b, c)]
    width = packed.shape[0] // 2
    torch.testing.assert_close(packed[0:5], alone[0][:5], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(packed[5:8], alone[1][:3], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(packed[width : width + 6], alone[2][:6], atol=2e-5, rtol=1e-4)


def test_lora_reference_is_adapter_off_with_shared_lm_head(tiny_model_dir):
    pair = build_policy(ModelConfig(lora_rank=4, lora_alpha=8), tiny_model_dir, torch.device("cpu"))
    assert pair.lora and pair.ref is None
    for name, p in pair.policy.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # B=0 at init would make policy == reference trivially
    batch = _batch([[[5, 9, 11, 20, 7]]])
    with torch.no_grad():
        pol = decoder_hidden(pair.policy, batch, pair.attn_impl)
        ref, ref_head = pair.ref_hidden_and_head(batch)
        base = build_policy(ModelConfig(), tiny_model_dir, torch.device("cpu"), need_ref=False)
        plain = decoder_hidden(base.policy, batch, base.attn_impl)
    assert ref_head.weight is lm_head_weight(pair.policy)  # same tensor object: the kernel's shared-W path
    torch.testing.assert_close(ref, plain, atol=1e-5, rtol=1e-5)
    assert (pol - ref).abs().max() > 1e-3


def test_lora_merged_state_dict_reproduces_adapter_outputs(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    pair = build_policy(ModelConfig(lora_rank=4, lora_alpha=8), tiny_model_dir, torch.device("cpu"))
    for name, p in pair.policy.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    merged = hf_state_dict(pair.policy)
    assert not any("lora" in k or "base_layer" in k for k in merged)
    plain = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    plain.load_state_dict(merged)
    x = torch.tensor([[5, 9, 11, 20, 7]])
    with torch.no_grad():
        torch.testing.assert_close(plain(x).logits, pair.policy(input_ids=x).logits, atol=1e-4, rtol=1e-4)
