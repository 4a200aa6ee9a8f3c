"""Policy and reference models: HF loading, PEFT LoRA, and hidden states for the fused seq_logps kernel.

The trainer never asks the HF model for logits: it runs the decoder (the model minus its lm_head) on packed rows and
hands hidden states plus the lm_head weight to `una_hpc.kernels.seq_logps`. The reference is the same network with the
LoRA adapter disabled (same lm_head tensor: the kernel's shared-weight path), or a frozen copy for full fine-tuning.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from ..config import ModelConfig
from ..hub import local_dir
from .attention import PackedRows, packed_forward_kwargs, resolve_attn_implementation
from .output_head import OutputHead, base_causal_lm, output_head, verify_output_head


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    tok = AutoTokenizer.from_pretrained(str(local_dir(str(path))))
    if tok.pad_token is None:  # Llama-style tokenizers ship without one; padding is masked out anyway
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(path: str | Path, attn_impl: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    """An HF causal LM from a model dir or a Hub id (una_hpc.hub: the Hub cache, never remote code)."""
    path = local_dir(str(path))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not an HF model directory (no config.json)")
    try:
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, attn_implementation=attn_impl)
    except ValueError as e:  # GPT-J, CodeGen, ...: no SDPA in transformers; eager takes the same packed inputs
        if attn_impl != "sdpa" or "sdpa" not in str(e).lower():
            raise
        print(f"{path}: this architecture has no SDPA attention in transformers; using eager attention")
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, attn_implementation="eager")


def apply_lora(model: nn.Module, cfg: ModelConfig) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [m for m in cfg.lora_target_modules if m in present]
    if not targets:
        raise ValueError(f"model.lora_target_modules {cfg.lora_target_modules} match no module of the model")
    lora = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def decoder_hidden(model: nn.Module, batch: PackedRows, attn_impl: str) -> Tensor:
    """Final-norm hidden states [R*L, H] of packed rows (what the lm_head would see), no logits."""
    lm = base_causal_lm(model)
    kwargs = packed_forward_kwargs(batch, attn_impl)
    out = lm.get_decoder()(**kwargs, use_cache=False)
    return out.last_hidden_state.reshape(-1, out.last_hidden_state.shape[-1])


def lm_head_weight(model: nn.Module) -> Tensor:
    """[V, H] output projection (tied embeddings: the embedding matrix itself)."""
    return output_head(model).weight


@dataclass
class PolicyPair:
    """The trained policy and how to get reference hidden states and lm_head weight."""

    policy: nn.Module
    """HF causal LM, PEFT-wrapped when LoRA is on."""
    ref: nn.Module | None
    """Frozen reference for full fine-tuning; None with LoRA (the policy with its adapter disabled) or when
    reference logps come from the cache."""
    attn_impl: str
    lora: bool

    @contextlib.contextmanager
    def reference(self):
        """Yields the module that computes the reference forward."""
        if self.lora:
            with self.policy.disable_adapter():
                yield self.policy
        elif self.ref is not None:
            yield self.ref
        else:
            raise RuntimeError("no reference model loaded (reference logps were expected from the cache)")

    @torch.no_grad()
    def ref_hidden_and_head(self, batch: PackedRows) -> tuple[Tensor, OutputHead]:
        """Reference hidden states and its output head (with LoRA: the policy's own lm_head objects)."""
        with self.reference() as ref:
            return decoder_hidden(ref, batch, self.attn_impl), output_head(ref)


def disable_dropout(model: nn.Module) -> nn.Module:
    """Every dropout of the base model off: nn.Dropout modules and the float rates modules keep for functional
    dropout (Llama's `attention_dropout`, MoE routers' `jitter_noise`). The implicit reward compares the policy with
    a dropout-free reference, so noise in one side only would bias it (TRL's DPO does the same by default)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        for name, value in vars(module).items():
            if isinstance(value, float) and ("dropout" in name or "jitter" in name):
                setattr(module, name, 0.0)
    return model


def build_policy(cfg: ModelConfig, path: str | Path, device: torch.device, need_ref: bool = True) -> PolicyPair:
    """Load the policy (and a reference unless LoRA provides it or reference logps are cached).

    The policy trains in train mode: HF applies gradient checkpointing only to modules in train mode
    (`from_pretrained` returns eval mode, where model.gradient_checkpointing silently did nothing). Dropout of the
    base model is off (`disable_dropout`); LoRA's own dropout (model.lora_dropout) stays as configured."""
    attn = resolve_attn_implementation(cfg.attn_implementation, device)
    policy = disable_dropout(load_causal_lm(path, attn).to(device)).train()
    verify_output_head(policy)  # before the first step: an unknown head is one line, never wrong log-probs
    if cfg.gradient_checkpointing:
        # Non-reentrant: frozen embeddings (LoRA) need no input-grad hook, and packed kwargs pass through.
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora_rank > 0:
        policy = apply_lora(policy, cfg)
        output_head(policy)  # a LoRA-adapted lm_head is refused here, not at the first step
        return PolicyPair(policy, None, attn, lora=True)
    ref = None
    if need_ref:
        ref = load_causal_lm(cfg.ref_path, attn).to(device) if cfg.ref_path else copy.deepcopy(policy)
        if cfg.ref_path:
            verify_output_head(ref)
        ref.eval().requires_grad_(False)
    return PolicyPair(policy, ref, attn, lora=False)
