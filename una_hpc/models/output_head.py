"""The output head: what a causal LM applies between its last hidden state and the softmax, read in one place.

    head = output_head(model)      # OutputHead(weight, bias, scale, softcap), or UnsupportedHeadError (one line)
    verify_output_head(model)      # once at load: the head rebuilt from hidden states equals the model's own logits
    logps, ref = seq_logps(hidden, head.weight, labels, seq_index, n, **head.transform())

The fused op computes logits as `softcap * tanh(scale * (h @ W.T + b) / softcap)` (docs/design.md, "The fused op").
That form covers the heads of the common HF decoders:

| architecture                 | what the model does after h @ W.T          | here                          |
|------------------------------|--------------------------------------------|-------------------------------|
| Llama, Mistral, Qwen, GPT-2… | nothing (tied or untied W)                 | plain                         |
| Gemma-2, Gemma-3             | `config.final_logit_softcapping`           | softcap                       |
| Cohere, Cohere-2             | `* config.logit_scale`                     | scale                         |
| Granite (dense, MoE, hybrid) | `/ config.logits_scaling`                  | scale = 1 / logits_scaling    |
| Phi, GPT-J, CodeGen          | `lm_head` with a bias                      | bias                          |

Anything else — remote code, a LoRA-wrapped lm_head, a config multiplier this table does not know — is refused before
training with one line naming the model class and the attribute, never guessed; `verify_output_head` catches what no
attribute reveals (a head that rescales hidden states, say) by comparing with one real forward.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor, nn


class UnsupportedHeadError(ValueError):
    """The model's output head is not `softcap * tanh(scale * (h @ W.T + b) / softcap)`."""


@dataclass(frozen=True)
class OutputHead:
    """The lm_head weight [V, H] (or this rank's vocabulary shard), its bias and the logit transform."""

    weight: Tensor
    bias: Tensor | None = None
    scale: float = 1.0
    softcap: float | None = None

    def transform(self) -> dict:
        """The keyword arguments of `una_hpc.kernels.seq_logps` that describe this head's transform."""
        return {"bias": self.bias, "scale": self.scale, "softcap": self.softcap}

    def logits(self, hidden: Tensor) -> Tensor:
        """Full logits (tests and the load-time check only: [T, V] is exactly what training never builds)."""
        z = hidden @ self.weight.T.to(hidden.dtype)
        if self.bias is not None:
            z = z + self.bias.to(z.dtype)
        z = z * self.scale
        if self.softcap is not None:
            z = self.softcap * torch.tanh(z / self.softcap)
        return z


# Config attributes that change the head, read by `output_head`; any *other* attribute whose name says it scales or
# caps the output logits is refused (_SUSPECT), so a new architecture's multiplier never passes silently.
_KNOWN = {"final_logit_softcapping", "logit_scale", "logits_scaling"}
_SUSPECT = re.compile(r"(logit|lm_head|output).*(scal|multiplier|mult|softcap|soft_cap|temperature)")
_IGNORED = re.compile(r"attn|attention|router")  # attention softcapping, MoE router settings: not the output head


def base_causal_lm(model: nn.Module) -> nn.Module:
    """The HF *ForCausalLM under optional PEFT / DeepSpeed wrappers."""
    while True:
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        else:
            return model


def _text_config(config) -> dict:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return text.to_dict()


def _refuse(model: nn.Module, what: str) -> UnsupportedHeadError:
    return UnsupportedHeadError(
        f"{type(model).__name__}: unsupported output head ({what}); una-hpc computes "
        "logits as softcap*tanh(scale*(h @ W.T + b)/softcap) and refuses other heads"
    )


def output_head(model: nn.Module) -> OutputHead:
    """Read the lm_head weight, bias, scale and softcap of an HF causal LM (wrappers allowed)."""
    lm = base_causal_lm(model)
    module_name = type(lm).__module__
    if not module_name.startswith("transformers."):
        raise _refuse(lm, f"class from {module_name}, not from transformers: a custom head is never guessed")
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if head is None or not isinstance(weight, Tensor):
        raise _refuse(lm, "get_output_embeddings() has no weight")
    if hasattr(head, "lora_A") or hasattr(head, "base_layer"):
        raise _refuse(lm, "lm_head is LoRA-adapted: leave lm_head out of model.lora_target_modules")
    bias = getattr(head, "bias", None)
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[0]):
        raise _refuse(lm, f"lm_head.bias has shape {tuple(bias.shape)} for a weight of {tuple(weight.shape)}")

    cfg = _text_config(lm.config)
    for key, value in cfg.items():
        if key in _KNOWN or not _SUSPECT.search(key) or _IGNORED.search(key):
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value not in (0, 1):
            raise _refuse(lm, f"config.{key}={value} is not a transform una-hpc knows")
    scale = 1.0
    if cfg.get("logit_scale") is not None:
        scale *= float(cfg["logit_scale"])
    if cfg.get("logits_scaling") is not None:
        scale /= float(cfg["logits_scaling"])
    softcap = cfg.get("final_logit_softcapping")
    if softcap is not None and not softcap > 0:
        raise _refuse(lm, f"config.final_logit_softcapping={softcap} must be positive or None")
    if not scale > 0:
        raise _refuse(lm, f"logit scale {scale} must be positive")
    return OutputHead(weight, bias, scale, None if softcap is None else float(softcap))


@torch.no_grad()
def verify_output_head(model: nn.Module, num_tokens: int = 8, seed: int = 0) -> OutputHead:
    """`output_head(model)`, checked against one forward of the model on a few tokens (fp32 tolerance 1e-4 of the
    logits' scale): the head rebuilt from the final hidden state must equal the model's own logits."""
    head = output_head(model)
    lm = base_causal_lm(model)
    vocab = head.weight.shape[0]
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (1, num_tokens), generator=gen).to(head.weight.device)
    was_training = lm.training
    lm.eval()
    try:
        out = lm(input_ids=ids, output_hidden_states=True, use_cache=False)
    finally:
        lm.train(was_training)
    want = out.logits[0].float()
    got = head.logits(out.hidden_states[-1][0].float())
    err = (got - want).abs().max().item()
    if not err <= 1e-4 * max(1.0, want.abs().max().item()):
        raise _refuse(
            lm,
            f"its logits differ from the head rebuilt from the final hidden state by {err:.3g}: "
            "a transform no config attribute describes",
        )
    return head
