"""Tiny random-weight decoders of many HF architectures (shared by tests/unit and tests/distributed).

    spec = ARCHS["gemma2"]                # what to build, which LoRA targets exist, which head transform it carries
    model = build_tiny(spec)              # seeded fp32 model: hidden 64, 2 layers, 4 heads of dim 16, vocab 320
    path = save_tiny(spec, out_dir)       # the same model written with save_pretrained (no tokenizer: random ids)

Random tiny models have tiny logits (|z| ~ 0.1), which would hide a head transform the code forgot: softcap 3
does nothing to logits of 0.1. Models with a transform therefore get a larger lm_head (`head_gain`, logits of a few
units) and, for a biased head, a non-zero bias, so that ignoring the transform visibly changes the log-probs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

VOCAB = 320
# hidden 64, 2 layers, 4 query heads (2 KV heads where the config has them) of dim 16; ids 0-2 are pad/bos/eos.
LLAMA_LIKE = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=128,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=False,
)
GPT_LIKE = dict(
    vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=128, bos_token_id=1, eos_token_id=2, pad_token_id=0
)
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
LLAMA_LORA = ATTN + ("gate_proj", "up_proj", "down_proj")

PLAIN, SOFTCAP, SCALE, BIAS = "plain", "softcap", "scale", "bias"


@dataclass(frozen=True)
class ArchSpec:
    name: str
    config: str
    """transformers config class name."""
    model: str
    """transformers causal-LM class name."""
    kwargs: dict
    lora_targets: tuple[str, ...]
    """Module names that exist in this architecture (model.lora_target_modules)."""
    transform: str = PLAIN
    """What the head does after h @ W.T: plain, softcap, scale or bias."""
    head_gain: float = 1.0
    """Multiplies the lm_head weight (tied: the embedding) after init, so logits are large enough to be capped."""
    attn: str = "sdpa"
    """model.attn_implementation: sdpa, or eager where HF has no SDPA attention for the class."""

    @property
    def tied(self) -> bool:
        return bool(self.build_config().tie_word_embeddings)

    def build_config(self):
        return getattr(transformers, self.config)(**self.kwargs)


def _spec(name, config, model, kwargs, lora=LLAMA_LORA, **kw) -> ArchSpec:
    return ArchSpec(name, config, model, kwargs, tuple(lora), **kw)


L = LLAMA_LIKE
SPECS = [
    _spec("llama", "LlamaConfig", "LlamaForCausalLM", L),
    _spec("mistral", "MistralConfig", "MistralForCausalLM", L),
    _spec("qwen2", "Qwen2Config", "Qwen2ForCausalLM", L),
    _spec("qwen2_tied", "Qwen2Config", "Qwen2ForCausalLM", {**L, "tie_word_embeddings": True}),
    _spec("qwen3", "Qwen3Config", "Qwen3ForCausalLM", L),
    _spec("olmo2", "Olmo2Config", "Olmo2ForCausalLM", L),
    _spec("gemma", "GemmaConfig", "GemmaForCausalLM", {**L, "tie_word_embeddings": True}),
    _spec(
        "gemma2",
        "Gemma2Config",
        "Gemma2ForCausalLM",
        {**L, "tie_word_embeddings": True, "final_logit_softcapping": 3.0, "query_pre_attn_scalar": 16},
        transform=SOFTCAP,
        head_gain=30.0,
    ),
    _spec(
        "gemma3",
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        {
            **L,
            "tie_word_embeddings": True,
            "final_logit_softcapping": 3.0,
            "query_pre_attn_scalar": 16,
            "layer_types": ["sliding_attention", "full_attention"],
        },
        transform=SOFTCAP,
        head_gain=30.0,
    ),
    _spec(
        "cohere",
        "CohereConfig",
        "CohereForCausalLM",
        {**L, "tie_word_embeddings": True, "logit_scale": 0.25},
        transform=SCALE,
        head_gain=30.0,
    ),
    _spec(
        "granite", "GraniteConfig", "GraniteForCausalLM", {**L, "logits_scaling": 4.0}, transform=SCALE, head_gain=30.0
    ),
    _spec(
        "granitemoe",
        "GraniteMoeConfig",
        "GraniteMoeForCausalLM",
        {**L, "logits_scaling": 0.5, "num_local_experts": 4, "num_experts_per_tok": 2},
        lora=ATTN,
        transform=SCALE,
        head_gain=5.0,
    ),
    _spec(
        "phi",
        "PhiConfig",
        "PhiForCausalLM",
        {**L, "partial_rotary_factor": 0.5},
        lora=("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"),
        transform=BIAS,
    ),
    _spec("phi3", "Phi3Config", "Phi3ForCausalLM", L, lora=("qkv_proj", "o_proj", "gate_up_proj", "down_proj")),
    _spec("gpt2", "GPT2Config", "GPT2LMHeadModel", GPT_LIKE, lora=("c_attn", "c_proj", "c_fc")),
    _spec("stablelm", "StableLmConfig", "StableLmForCausalLM", {**L, "partial_rotary_factor": 0.25}),
    _spec("starcoder2", "Starcoder2Config", "Starcoder2ForCausalLM", L, lora=ATTN + ("c_fc", "c_proj")),
    # transformers 5 stores MoE experts as fused 3-D parameters, not nn.Linear modules: LoRA adapts attention only
    # (here and in granitemoe above).
    _spec(
        "mixtral",
        "MixtralConfig",
        "MixtralForCausalLM",
        {**L, "num_local_experts": 4, "num_experts_per_tok": 2},
        lora=ATTN,
    ),
    _spec(
        "qwen3_moe",
        "Qwen3MoeConfig",
        "Qwen3MoeForCausalLM",
        {**L, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32},
        lora=ATTN,
    ),
    # GPT-J and CodeGen have no SDPA attention in transformers: model.attn_implementation=eager (packed: additive mask).
    _spec(
        "gptj",
        "GPTJConfig",
        "GPTJForCausalLM",
        {**GPT_LIKE, "rotary_dim": 8},
        lora=("q_proj", "k_proj", "v_proj", "out_proj", "fc_in", "fc_out"),
        transform=BIAS,
        attn="eager",
    ),
    _spec(
        "codegen",
        "CodeGenConfig",
        "CodeGenForCausalLM",
        {**GPT_LIKE, "rotary_dim": 8},
        lora=("qkv_proj", "out_proj", "fc_in", "fc_out"),
        transform=BIAS,
        attn="eager",
    ),
]
ARCHS = {s.name: s for s in SPECS}


@torch.no_grad()
def build_tiny(spec: ArchSpec, seed: int = 0) -> torch.nn.Module:
    """The seeded fp32 model of `spec`, with the head enlarged (and biased) as the spec says."""
    torch.manual_seed(seed)
    model = getattr(transformers, spec.model)(spec.build_config()).float().eval()
    head = model.get_output_embeddings()
    head.weight.mul_(spec.head_gain)
    if getattr(head, "bias", None) is not None:  # HF inits biases to zero: a zero bias would test nothing
        head.bias.normal_(0.0, 2.0)
    return model


def save_tiny(spec: ArchSpec, out_dir: str | Path, seed: int = 0) -> Path:
    out = Path(out_dir)
    build_tiny(spec, seed).save_pretrained(str(out))
    return out
