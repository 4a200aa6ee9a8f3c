"""LoRA merged on the fly: a PEFT model's state dict -> plain HF names with W + (alpha/r)·B@A folded in.

Used to export a loadable HF dir and to push weights into a rollout engine, without ever mutating the training
model (PEFT's merge_and_unload would change the module tree under the optimizer).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

PEFT_PREFIX = "base_model.model."
LORA_A_KEY = re.compile(r"^(?P<mod>.+)\.lora_A\.(?P<adapter>[^.]+)\.weight$")


def lora_scalings(peft_model) -> dict[str, float]:
    """Adapter name -> alpha / r (rank-stabilized: alpha / sqrt(r))."""
    out = {}
    for name, c in peft_model.peft_config.items():
        out[name] = c.lora_alpha / (c.r**0.5 if getattr(c, "use_rslora", False) else c.r)
    return out


def merge_lora_state_dict(state: Mapping[str, Tensor], scaling: float) -> dict[str, Tensor]:
    """PEFT names -> HF names; `x.base_layer.weight` + scaling * `x.lora_B.<a>.weight` @ `x.lora_A.<a>.weight`
    -> `x.weight`, for every adapter <a> present. The state-dict form of the merge, for consolidated ZeRO-3 / TP
    states and offline checkpoints; a live model is merged layer by layer by rollout.weights.policy_weights_for_sync.
    """
    merged: dict[str, Tensor] = {k: v for k, v in state.items() if ".lora_" not in k}
    for key, a in state.items():
        m = LORA_A_KEY.match(key)
        if m is None:
            continue
        base = f"{m['mod']}.base_layer.weight"
        b = state[f"{m['mod']}.lora_B.{m['adapter']}.weight"]
        w = merged[base]
        merged[base] = (w.float() + scaling * (b.float() @ a.float())).to(w.dtype)
    out: dict[str, Tensor] = {}
    for key, value in merged.items():
        name = key[len(PEFT_PREFIX) :] if key.startswith(PEFT_PREFIX) else key
        out[name.replace(".base_layer.", ".")] = value
    return out


def hf_state_dict(model, state: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Plain HF-named weights of a (possibly PEFT) causal LM; `state` overrides model.state_dict() (ZeRO-3)."""
    state = model.state_dict() if state is None else state
    if hasattr(model, "peft_config"):
        (scale,) = lora_scalings(model).values()
        return merge_lora_state_dict(state, scale)
    return {k: v for k, v in state.items()}
