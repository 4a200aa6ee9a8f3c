"""ValueModel (una_hpc.models.value): backbone loading, shapes, gradients, save/load, padding invariance."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM

from una_hpc.models.value import HEAD_FILE, ValueModel


@pytest.fixture(scope="module")
def critic(tiny_model_dir):
    torch.manual_seed(0)
    return ValueModel.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def causal(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def tokens(b: int, t: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, 250, (b, t), generator=g)


def test_backbone_is_the_policy_backbone_and_values_are_a_linear_readout(critic, causal):
    # Make the value head read one lm_head row: values must then equal the policy's logits for that token.
    ids = tokens(3, 9)
    with torch.no_grad():
        head_weight = critic.value_head.weight.clone()
        critic.value_head.weight.copy_(causal.lm_head.weight[7:8])
        values = critic(ids)
        critic.value_head.weight.copy_(head_weight)
        logits = causal(input_ids=ids).logits[..., 7]
    torch.testing.assert_close(values, logits, atol=1e-5, rtol=1e-5)


def test_shapes_dtype_and_small_head(critic):
    ids = tokens(2, 6)
    values = critic(ids, torch.ones_like(ids))
    assert values.shape == (2, 6) and values.dtype == torch.float32
    assert critic.value_head.weight.shape == (1, critic.config.hidden_size)
    assert critic.value_head.weight.abs().max() < 0.1 and critic.value_head.bias.item() == 0


def test_bf16_backbone_gives_fp32_values(tiny_model_dir):
    critic = ValueModel.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    assert next(critic.backbone.parameters()).dtype == torch.bfloat16
    assert critic.value_head.weight.dtype == torch.float32
    assert critic(tokens(1, 4)).dtype == torch.float32


def test_gradient_reaches_backbone(critic):
    critic.zero_grad()
    ids = tokens(2, 5)
    critic(ids).pow(2).sum().backward()
    assert critic.value_head.weight.grad.abs().sum() > 0
    embed = critic.backbone.get_input_embeddings().weight
    assert embed.grad is not None and embed.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in critic.parameters())
    critic.zero_grad()


def test_save_load_round_trip(critic, tmp_path):
    with torch.no_grad():  # a head that is not the default init, so loading it is observable
        critic.value_head.bias.fill_(0.25)
    out = critic.save_pretrained(tmp_path / "critic")
    assert (out / HEAD_FILE).is_file() and (out / "config.json").is_file()
    loaded = ValueModel.from_pretrained(out)
    ids = tokens(2, 7, seed=3)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    with torch.no_grad():
        assert torch.equal(loaded(ids, mask), critic(ids, mask))
    for (k, a), (k2, b) in zip(critic.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    plain = AutoModel.from_pretrained(out)  # the backbone stays a plain HF model dir
    assert type(plain) is type(critic.backbone)
    with torch.no_grad():
        critic.value_head.bias.zero_()


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_does_not_change_values_at_real_tokens(critic, side):
    lengths = [7, 4, 2]
    t, pad = max(lengths), 0
    seqs = [tokens(1, n, seed=i)[0] for i, n in enumerate(lengths)]
    ids = torch.full((len(seqs), t), pad)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        sl = slice(t - len(s), t) if side == "left" else slice(0, len(s))
        ids[i, sl], mask[i, sl] = s, 1
    with torch.no_grad():
        batch = critic(ids, mask)
        for i, s in enumerate(seqs):
            alone = critic(s[None])[0]
            real = batch[i][mask[i] == 1]
            torch.testing.assert_close(real, alone, atol=1e-5, rtol=1e-5)
        assert torch.all(batch[mask == 0] == 0)
        explicit = critic(ids, mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
        torch.testing.assert_close(explicit, batch)


def test_zero_head_init_and_errors(tiny_model_dir, tmp_path):
    zero = ValueModel.from_pretrained(tiny_model_dir, head_init_std=0.0)
    assert torch.all(zero(tokens(1, 3)) == 0)
    with pytest.raises(ValueError, match="not an HF model dir"):
        ValueModel.from_pretrained(tmp_path / "nothing")
    with pytest.raises(ValueError, match="does not match input_ids"):
        zero(tokens(2, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"\[batch, tokens\]"):
        zero(tokens(1, 3)[0])
