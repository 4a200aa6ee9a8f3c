"""The PPO critic: the policy's transformer backbone plus a Linear(hidden, 1) value head.

    critic = ValueModel.from_pretrained(policy_or_reward_model_dir, dtype=torch.bfloat16)
    values = critic(input_ids, attention_mask)          # [B, T] float32
    critic.save_pretrained(out_dir); ValueModel.from_pretrained(out_dir)   # same values

`from_pretrained` loads the backbone (AutoModel) from an HF causal-LM or sequence-classification dir. The value
head is, in this order: a saved head (`value_head.safetensors`, written by `save_pretrained`); the score head of a
reward model (a sequence-classification dir with one label: the critic starts as the RM, as InstructGPT, TRL and
OpenRLHF start it); else a small fresh one (normal, std 1/(hidden+1), as OpenRLHF's critic). The head is kept
in fp32 and the values come back fp32 whatever the backbone dtype.

Alignment: values[:, t] is the value of the prefix input_ids[:, :t+1] — the state in which token t+1 is generated,
the same position whose logits predict token t+1. Positions with attention_mask 0 get value 0. Without explicit
position_ids they are derived from attention_mask (cumsum - 1), so left and right padding give the same values at
real tokens as the unpadded sequence.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoModel, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel

HEAD_FILE = "value_head.safetensors"
META_FILE = "value_model.json"


def positions_from_mask(attention_mask: Tensor) -> Tensor:
    """[B, T] position ids counting only attended tokens (left padding starts real tokens at 0); padding gets 0."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def is_reward_model_dir(path: str | Path) -> bool:
    """An HF sequence-classification dir with one label (a reward model)."""
    cfg = json.loads((Path(path) / "config.json").read_text())
    archs = cfg.get("architectures") or []
    labels = cfg.get("num_labels", len(cfg.get("id2label") or {}) or 2)
    return any(a.endswith("ForSequenceClassification") for a in archs) and labels == 1


def _score_head(path: Path) -> nn.Linear:
    """The reward model's Linear(hidden, 1) score head as an fp32 value head (bias 0 when it has none)."""
    rm = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=torch.float32)
    heads = [m for n, m in rm.named_children() if n != rm.base_model_prefix and isinstance(m, nn.Linear)]
    if len(heads) != 1 or heads[0].out_features != 1:
        raise ValueError(f"{path}: no Linear(hidden, 1) score head to start the value head from")
    head = nn.Linear(heads[0].in_features, 1, dtype=torch.float32)
    with torch.no_grad():
        head.weight.copy_(heads[0].weight.float())
        head.bias.copy_(heads[0].bias.float() if heads[0].bias is not None else torch.zeros(1))
    return head


class ValueModel(nn.Module):
    """Critic V(prefix): `backbone` (an HF base model such as LlamaModel) + `value_head` Linear(hidden, 1)."""

    def __init__(
        self, backbone: PreTrainedModel, value_head: nn.Linear | None = None, head_init_std: float | None = None
    ) -> None:
        super().__init__()
        hidden = backbone.config.get_text_config().hidden_size
        self.backbone = backbone
        if value_head is None:
            value_head = nn.Linear(hidden, 1, dtype=torch.float32)
            std = 1.0 / (hidden + 1) if head_init_std is None else head_init_std
            with torch.no_grad():
                if std > 0:
                    value_head.weight.normal_(0.0, std)
                else:
                    value_head.weight.zero_()
                value_head.bias.zero_()
        if tuple(value_head.weight.shape) != (1, hidden):
            raise ValueError(f"value head must be Linear({hidden}, 1), got weight {tuple(value_head.weight.shape)}")
        self.value_head = value_head.float()

    @property
    def config(self) -> PretrainedConfig:
        return self.backbone.config

    def gradient_checkpointing_enable(self, **kwargs: object) -> None:
        self.backbone.gradient_checkpointing_enable(**kwargs)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, position_ids: Tensor | None = None
    ) -> Tensor:
        """[B, T] int64 tokens -> [B, T] fp32 values (0 where attention_mask is 0)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, tokens], got shape {tuple(input_ids.shape)}")
        for name, t in (("attention_mask", attention_mask), ("position_ids", position_ids)):
            if t is not None and t.shape != input_ids.shape:
                raise ValueError(f"{name} shape {tuple(t.shape)} does not match input_ids {tuple(input_ids.shape)}")
        if position_ids is None and attention_mask is not None:
            position_ids = positions_from_mask(attention_mask)
        out = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        )
        hidden = out.last_hidden_state
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()
        if attention_mask is not None:
            values = values.masked_fill(attention_mask == 0, 0.0)
        return values

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: torch.dtype = torch.float32,
        attn_implementation: str | None = None,
        head_init_std: float | None = None,
    ) -> ValueModel:
        """Backbone weights of the HF model at `path` (+ its saved value head, if any; else a fresh small one)."""
        p = Path(path)
        if not (p / "config.json").is_file():
            raise ValueError(f"{p}: not an HF model dir (no config.json)")
        kwargs: dict[str, object] = {"dtype": dtype}
        if attn_implementation is not None:
            kwargs["attn_implementation"] = attn_implementation
        # lm_head / score weights show up as UNEXPECTED in transformers' load report: they are not needed here.
        backbone, info = AutoModel.from_pretrained(str(p), output_loading_info=True, **kwargs)
        if info.get("missing_keys"):
            missing = sorted(info["missing_keys"])
            raise ValueError(
                f"{p}: backbone weights missing from the checkpoint ({len(missing)} keys, e.g. "
                f"{missing[0]}); is this a causal-LM or sequence-classification dir?"
            )
        head = None
        if (p / HEAD_FILE).is_file():
            state = load_file(str(p / HEAD_FILE))
            head = nn.Linear(state["weight"].shape[1], 1, dtype=torch.float32)
            head.load_state_dict({k: v.float() for k, v in state.items()})
        elif is_reward_model_dir(p):
            head = _score_head(p)
        return cls(backbone, head, head_init_std)

    def save_pretrained(self, path: str | Path) -> Path:
        """Backbone in HF format (loadable by AutoModel) + value_head.safetensors (fp32) + a small marker file."""
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(str(p))
        head = {k: v.detach().float().contiguous().cpu() for k, v in self.value_head.state_dict().items()}
        save_file(head, str(p / HEAD_FILE))
        (p / META_FILE).write_text(
            json.dumps({"kind": "value_model", "head": HEAD_FILE, "hidden_size": int(self.value_head.weight.shape[1])})
            + "\n"
        )
        return p
