"""LoRA merged on the fly: a PEFT model's state dict -> plain HF names with W + (alpha/r)·B@A folded in.

Used to export a loadable HF dir and to push weights into a rollout engine, without ever mutating the training
model (PEFT's merge_and_unload would change the module tree under the optimizer).
"""
from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

PEFT_PREFIX = "base_model.model."


def lora_scalings(peft_model) -> dict[str, float]:
    """Adapter name -> alpha / r (rank-stabilized: alpha / sqrt(r))."""
    out = {}
    for name, c in peft_model.peft_config.items():
        out[name] = c.lora_alpha / (c.r ** 0.5 if getattr(c, "use_rslora", False) else c.r)
    return out


def merge_lora_state_dict(state: Mapping[str, Tensor], scaling: float, adapter: str = "default") -> dict[str, Tensor]:
    """PEFT names -> HF names; `x.base_layer.weight` + scaling * `x.lora_B.w` @ `x.lora_A.w` -> `x.weight`."""
    merged: dict[str, Tensor] = {}
    for key, value in state.items():
        if ".lora_" in key:
            continue
        name = key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key
        if ".base_layer." in key:
            stem = key.split(".base_layer.")[0]
            name = name.replace(".base_layer.", ".")
            a, b = state.get(f"{stem}.lora_A.{adapter}.weight"), state.get(f"{stem}.lora_B.{adapter}.weight")
            if key.endswith(".weight") and a is not None and b is not None:
                value = (value.float() + scaling * (b.float() @ a.float())).to(value.dtype)
        merged[name] = value
    return merged


def hf_state_dict(model, state: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Plain HF-named weights of a (possibly PEFT) causal LM; `state` overrides model.state_dict() (ZeRO-3)."""
    state = model.state_dict() if state is None else state
    if hasattr(model, "peft_config"):
        (scale,) = lora_scalings(model).values()
        return merge_lora_state_dict(state, scale)
    return {k: v for k, v in state.items()}

