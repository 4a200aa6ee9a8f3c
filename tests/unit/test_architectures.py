"""The trainer's log-probs equal HF's own log_softmax(logits) on 21 tiny decoders of 20 architectures.

    .venv/bin/python -m pytest tests/unit/test_architectures.py -q      (about 20 s on 2 idle cores)

Every model of tests/arch_models.py (tiny, random, fp32) is saved with save_pretrained and loaded through the
trainer's own `build_policy` (so through `verify_output_head`), wrapped in the engine `build_engine` gives it, and run
through `kernel_logps`, the function the trainer calls per micro-batch. Its per-sequence sums for the policy and the
reference must equal the sums of log_softmax(model(input_ids).logits), taken in float64 from each HF model's own
logits with each sequence run alone (no packing, no mask).

Tolerance (fp32): |kernel - HF| <= 1e-4 nats per labelled token, i.e. 1e-4 * n_labelled for each sequence sum;
the parameter gradients of sum(w * logps) agree to 1e-4 of each parameter's largest gradient entry.

The batch packs four sequences of different lengths into two rows (block-diagonal attention, position ids restarting
at 0, padding at the end of the second row). Each architecture runs twice: full fine-tuning (reference = the frozen
copy; the policy's parameters are perturbed so the two differ) and LoRA rank 4 (lora_B perturbed; the reference is
the adapter-off base model and must equal a freshly loaded base model's logits). Models with a head transform
(softcap, scale, bias) also check that dropping the transform would change every sequence by more than 1e-2 nats,
so the comparison could not pass if the transform were ignored.

Refused heads: an unknown output multiplier in the config, a logits-rescaling subclass defined outside transformers,
a head that rescales in forward, and LoRA on lm_head each give one-line UnsupportedHeadError naming the class.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import transformers
from arch_models import ARCHS, BIAS, PLAIN, SCALE, SOFTCAP, VOCAB, build_tiny, save_tiny
from torch import nn
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from una_hpc.config import Config, ModelConfig
from una_hpc.data.packing import collate
from una_hpc.data.tokenize import TokenizedExample
from una_hpc.models.attention import prompt_sharing_refusal
from una_hpc.models.output_head import UnsupportedHeadError, output_head, verify_output_head
from una_hpc.models.policy import build_policy
from una_hpc.parallel import build_engine
from una_hpc.trainer.step import kernel_logps

# PEFT on GPT-2's Conv1D layers notes that it switches to fan_in_fan_out: expected, not a problem.
pytestmark = pytest.mark.filterwarnings("ignore:fan_in_fan_out is set to False:UserWarning")
CPU = torch.device("cpu")
TOKEN_TOL = 1e-4  # nats per labelled token (fp32 model, fp32 kernel vs float64 log_softmax of fp32 logits)
GRAD_TOL = 1e-4  # of each parameter's largest gradient entry
TRANSFORM_MATTERS = 1e-2  # nats per sequence: dropping the head transform must move every sequence at least this


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices gain nothing from intra-op threads, and on a busy 2-core runner the thread pool's spinning
    makes this module several times slower; restored for the modules that run after this one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict:
    """Every architecture saved once (about 0.1 s each)."""
    root = tmp_path_factory.mktemp("archs")
    return {name: save_tiny(spec, root / name) for name, spec in ARCHS.items()}


def examples(seed: int = 0) -> list[TokenizedExample]:
    """A pair (chosen 6, rejected 9 completion tokens), a score and a binary example; random ids above the
    special ones (0-2: pad/bos/eos)."""
    g = torch.Generator().manual_seed(seed)

    def ids(n):
        return torch.randint(3, VOCAB, (n,), generator=g).tolist()

    return [
        TokenizedExample(0, "pairwise", [(ids(3), ids(6)), (ids(3), ids(9))], math.nan),
        TokenizedExample(1, "score", [(ids(4), ids(7))], 0.7),
        TokenizedExample(2, "binary", [(ids(2), ids(4))], 1.0),
    ]


def sequences(exs: list[TokenizedExample]) -> list[tuple[list[int], int]]:
    """(token ids, prompt length) per sequence, in the canonical order collate numbers them."""
    return [(p + c, len(p)) for ex in exs for p, c in ex.sequences]


def packed_batch():
    # Row capacity 27: row 0 = chosen + rejected + binary (21 + 6), row 1 = score (11) + 16 padding.
    batch = collate(examples(), pad_id=0, row_length=27)
    assert batch.input_ids.shape == (2, 27) and batch.num_seqs == 4
    assert batch.pad_mask[1].sum() == 16 and not batch.pad_mask[0].any()
    return batch


def hf_seq_logps(model: nn.Module, seqs, *, plain_head: bool = False) -> torch.Tensor:
    """[S] float64 sums of log_softmax(logits) over each sequence's completion, each sequence run alone.

    plain_head: logits = h @ W.T from the final hidden state, i.e. what a reader that ignores bias, scale and softcap
    would compute (to show the transform matters)."""
    out = []
    for ids, prompt_len in seqs:
        x = torch.tensor([ids])
        res = model(input_ids=x, output_hidden_states=plain_head, use_cache=False)
        if plain_head:
            logits = res.hidden_states[-1][0] @ output_head(model).weight.T
        else:
            logits = res.logits[0]
        logp = logits.double().log_softmax(-1)
        t = torch.arange(prompt_len - 1, len(ids) - 1)
        out.append(logp[t, x[0, prompt_len:]].sum())
    return torch.stack(out)


def load_base(spec, path, **config_overrides) -> nn.Module:
    """The saved model, loaded plainly by HF (the reference the LoRA adapter-off path must reproduce)."""
    return AutoModelForCausalLM.from_pretrained(
        str(path), dtype=torch.float32, attn_implementation=spec.attn, **config_overrides
    ).eval()


def engine_for(pair):
    cfg = Config()
    cfg.parallel.backend = "none"
    return build_engine(pair.policy, cfg)


@torch.no_grad()
def perturb(pair, seed: int = 1) -> None:
    """Make policy != reference: LoRA B matrices (zero at init) or, for full fine-tuning, every policy weight."""
    g = torch.Generator().manual_seed(seed)
    for name, p in pair.policy.named_parameters():
        if pair.lora and "lora_B" in name:
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
        elif not pair.lora:
            p.mul_(1 + 0.1 * torch.randn(p.shape, generator=g))


def param_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


# ---------------------------------------------------------------------------------------------------------------------
# The head each architecture carries, as the reader sees it.


def test_output_head_reads_each_transform(model_dirs):
    assert len(ARCHS) >= 15
    for name, spec in ARCHS.items():
        pair = build_policy(ModelConfig(attn_implementation=spec.attn), model_dirs[name], CPU, need_ref=False)
        head = output_head(pair.policy)
        config = pair.policy.config
        assert type(pair.policy).__name__ == spec.model, name
        assert (head.softcap is not None) == (spec.transform == SOFTCAP), name
        assert (head.scale != 1.0) == (spec.transform == SCALE), name
        assert (head.bias is not None) == (spec.transform == BIAS), name
        if spec.transform == SOFTCAP:
            assert head.softcap == config.final_logit_softcapping
        if name == "cohere":
            assert head.scale == config.logit_scale
        if name.startswith("granite"):
            assert head.scale == pytest.approx(1 / config.logits_scaling)
        if spec.tied:  # the head *is* the input embedding (one tensor for the kernel and the embedding lookup)
            assert head.weight is pair.policy.get_input_embeddings().weight, name
    tied = [n for n, s in ARCHS.items() if s.tied]
    assert "gpt2" in tied and len(tied) >= 2


# ---------------------------------------------------------------------------------------------------------------------
# kernel_logps == HF log_softmax, per architecture, full fine-tuning and LoRA.


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_kernel_logps_equal_hf_log_softmax(arch, lora, model_dirs):
    spec, path = ARCHS[arch], model_dirs[arch]
    mcfg = ModelConfig(
        attn_implementation=spec.attn,
        lora_rank=4 if lora else 0,
        lora_alpha=8,
        lora_target_modules=list(spec.lora_targets),
    )
    pair = build_policy(mcfg, path, CPU)  # verify_output_head runs here
    assert pair.lora == lora and (pair.ref is None) == lora
    perturb(pair)
    engine = engine_for(pair)
    batch = packed_batch()
    seqs = sequences(examples())
    n_labelled = torch.tensor([len(ids) - p for ids, p in seqs], dtype=torch.float64)
    tol = TOKEN_TOL * n_labelled

    # The trainer's path: packed rows -> engine hidden states -> fused kernel with the model's head transform.
    weights = torch.tensor([1.0, -0.5, 0.25, 2.0])
    logps, ref = kernel_logps(engine, pair, batch, batch.seq_index, batch.num_seqs, with_ref=True)
    assert logps.dtype == torch.float32 and ref is not None and not ref.requires_grad
    engine.backward((weights * logps).sum())
    kernel_grads = param_grads(pair.policy)

    # HF: each sequence alone through the policy's own forward (PEFT's for LoRA) and a freshly loaded base model.
    hf_policy = hf_seq_logps(pair.policy, seqs)
    (weights.double() * hf_policy).sum().backward()
    hf_grads = param_grads(pair.policy)
    with torch.no_grad():
        hf_ref = hf_seq_logps(load_base(spec, path), seqs)

    assert (logps.double() - hf_policy.detach()).abs().le(tol).all(), (logps, hf_policy, tol)
    assert (ref.double() - hf_ref).abs().le(tol).all(), (ref, hf_ref, tol)
    # The perturbation is real: the policy differs from the reference well beyond the tolerance.
    assert ((hf_policy.detach() - hf_ref).abs() > 10 * tol).any()

    # Per parameter, relative to that parameter's own largest entry: a bias gradient off by 0.1% must not hide
    # behind the embedding's larger gradient.
    assert kernel_grads.keys() == hf_grads.keys() and kernel_grads
    floor = 1e-6 * max(g.abs().max().item() for g in hf_grads.values())
    for name, g in hf_grads.items():
        err = (kernel_grads[name] - g).abs().max().item()
        assert err <= GRAD_TOL * max(g.abs().max().item(), floor), (name, err, g.abs().max().item())

    if spec.transform != PLAIN:
        with torch.no_grad():
            plain = hf_seq_logps(pair.policy, seqs, plain_head=True)
        assert ((plain - hf_policy.detach()).abs() > TRANSFORM_MATTERS).all(), (arch, plain, hf_policy)


# ---------------------------------------------------------------------------------------------------------------------
# Pairs sharing one copy of their prompt (data.share_prompt): the explicit branch mask on every architecture.


def shared_prompt_examples(seed: int = 2) -> list[TokenizedExample]:
    """Two pairs, each with one prompt for both completions (5 and 2 prompt tokens), and a score example."""
    g = torch.Generator().manual_seed(seed)

    def ids(n):
        return torch.randint(3, VOCAB, (n,), generator=g).tolist()

    p0, p1 = ids(5), ids(2)
    return [
        TokenizedExample(0, "pairwise", [(p0, ids(6)), (p0, ids(9))], math.nan),
        TokenizedExample(1, "score", [(ids(4), ids(7))], 0.7),
        TokenizedExample(2, "pairwise", [(p1, ids(3)), (p1, ids(1))], math.nan),
    ]


@pytest.mark.parametrize("arch", list(ARCHS))
def test_shared_prompt_logps_equal_hf(arch, model_dirs):
    """Every architecture the trainer takes: with the prompt stored once per pair (4 + 1 tokens fewer, the two
    pairs and the score sequence in one row), policy (LoRA) and reference sums equal HF's, each sequence alone."""
    spec, path = ARCHS[arch], model_dirs[arch]
    mcfg = ModelConfig(
        attn_implementation=spec.attn, lora_rank=4, lora_alpha=8, lora_target_modules=list(spec.lora_targets)
    )
    pair = build_policy(mcfg, path, CPU)
    assert prompt_sharing_refusal(pair.policy.config, pair.attn_impl, 128) is None
    perturb(pair)
    exs = shared_prompt_examples()
    batch = collate(exs, pad_id=0, row_length=64, share_prompt=True)
    plain = collate(exs, pad_id=0, row_length=64)
    assert batch.unit_ids is not None and batch.input_ids.shape[0] == 1
    assert int((~batch.pad_mask).sum()) == int((~plain.pad_mask).sum()) - 4 - 1 and batch.num_tokens == plain.num_tokens
    seqs = sequences(exs)
    tol = TOKEN_TOL * torch.tensor([len(ids) - p for ids, p in seqs], dtype=torch.float64)
    with torch.no_grad():
        logps, ref = kernel_logps(engine_for(pair), pair, batch, batch.seq_index, batch.num_seqs, with_ref=True)
        hf_policy = hf_seq_logps(pair.policy, seqs)
        hf_ref = hf_seq_logps(load_base(spec, path), seqs)
    assert (logps.double() - hf_policy).abs().le(tol).all(), (logps, hf_policy, tol)
    assert (ref.double() - hf_ref).abs().le(tol).all(), (ref, hf_ref, tol)
    assert ((hf_policy - hf_ref).abs() > 10 * tol).any()


# ---------------------------------------------------------------------------------------------------------------------
# Sliding-window attention shorter than a sequence: the packed mask must apply the window too.

SLIDING = {"mistral": {}, "gemma2": {}, "qwen2": {"use_sliding_window": True, "max_window_layers": 0}}


@pytest.mark.parametrize("arch", list(SLIDING))
def test_sliding_window_packed_equals_hf(arch, tmp_path):
    """The models above use windows far longer than these sequences; here the window (4) is shorter than every
    sequence (6 to 12 tokens), as Gemma-3's 512/1024 or Mistral's 4096 are shorter than long training sequences.
    An explicit 4-D packed mask would be used as-is on sliding-window layers and drop the window; packed rows
    therefore pass position ids only and transformers builds each layer's mask (una_hpc/models/attention.py)."""
    base = ARCHS[arch]
    spec = dataclasses.replace(base, kwargs={**base.kwargs, "sliding_window": 4, **SLIDING[arch]})
    path = save_tiny(spec, tmp_path)
    pair = build_policy(ModelConfig(attn_implementation=spec.attn), path, CPU)
    batch, seqs = packed_batch(), sequences(examples())
    n_labelled = torch.tensor([len(ids) - p for ids, p in seqs], dtype=torch.float64)
    with torch.no_grad():
        logps, ref = kernel_logps(engine_for(pair), pair, batch, batch.seq_index, batch.num_seqs, with_ref=True)
        hf = hf_seq_logps(load_base(spec, path), seqs)
        unwindowed = hf_seq_logps(load_base(spec, path, sliding_window=4096), seqs)
    assert ((hf - unwindowed).abs() > TRANSFORM_MATTERS).any()  # the window does bind at these lengths
    # Shared prompts need an explicit mask, which would drop the window: refused for this model.
    assert "sliding window (4)" in prompt_sharing_refusal(pair.policy.config, pair.attn_impl, 12)
    assert (logps.double() - hf).abs().le(TOKEN_TOL * n_labelled).all(), (logps, hf)
    assert (ref.double() - hf).abs().le(TOKEN_TOL * n_labelled).all(), (ref, hf)


# ---------------------------------------------------------------------------------------------------------------------
# Heads the reader cannot express: refused before any log-prob is computed, in one line naming the class.


def assert_one_line(err: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_unknown_config_multiplier_is_refused(tmp_path):
    # (a) an output multiplier no table row describes, written to config.json and loaded by the trainer.
    model = build_tiny(ARCHS["llama"])
    model.config.output_logits_multiplier = 2.0
    model.save_pretrained(str(tmp_path))
    with pytest.raises(UnsupportedHeadError) as err:
        build_policy(ModelConfig(), tmp_path, CPU)
    assert_one_line(err, "LlamaForCausalLM", "output_logits_multiplier")

    # FalconH1 multiplies its logits by config.lm_head_multiplier.
    falcon = transformers.FalconH1ForCausalLM(
        transformers.FalconH1Config(
            vocab_size=VOCAB,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            mamba_d_ssm=64,
            mamba_n_heads=4,
            mamba_d_head=16,
            mamba_d_state=16,
            mamba_n_groups=1,
            lm_head_multiplier=2.0,
            max_position_embeddings=128,
        )
    )
    with pytest.raises(UnsupportedHeadError) as err:
        verify_output_head(falcon)
    assert_one_line(err, "FalconH1ForCausalLM", "lm_head_multiplier")


class RescaledLlama(LlamaForCausalLM):
    """A custom head: logits * 2 in forward, with nothing in the config that says so."""

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.logits = out.logits * 2
        return out


def test_custom_head_subclass_is_refused():
    # (b) a subclass outside transformers: its head is never guessed, whatever its forward does.
    spec = ARCHS["llama"]
    model = RescaledLlama(spec.build_config())
    with pytest.raises(UnsupportedHeadError) as err:
        verify_output_head(model)
    assert_one_line(err, "RescaledLlama", __name__)


def test_head_rescaled_in_forward_is_caught_by_the_load_check():
    # A transformers class whose lm_head was patched: no attribute reveals it, the one real forward does.
    model = build_tiny(ARCHS["llama"])
    original = model.lm_head.forward
    model.lm_head.forward = lambda h: 2 * original(h)
    with pytest.raises(UnsupportedHeadError) as err:
        verify_output_head(model)
    assert_one_line(err, "LlamaForCausalLM", "differ")


def test_lora_on_lm_head_is_refused(model_dirs):
    # (c) LoRA-adapted lm_head: W + BA is not a weight the kernel can take. Refused at load or, at the latest, by the
    # first kernel_logps call, before any log-prob is returned.
    mcfg = ModelConfig(lora_rank=4, lora_target_modules=["q_proj", "v_proj", "lm_head"])
    with pytest.raises(UnsupportedHeadError) as err:
        pair = build_policy(mcfg, model_dirs["llama"], CPU)
        batch = packed_batch()
        kernel_logps(engine_for(pair), pair, batch, batch.seq_index, batch.num_seqs, with_ref=True)
    assert_one_line(err, "LlamaForCausalLM", "lm_head")
