"""Reward models: an HF AutoModelForSequenceClassification (num_labels=1) that scores (prompt, response) pairs.

    rm = RewardModel.from_pretrained("runs/default/reward_model")
    rm.score_texts(["count to three"], ["one two three"])     # tensor([logit]) float32
    rm.score_rollouts(rollouts)                               # the online loop: prompt + completion token ids

How a pair becomes tokens (`encode_pair`): exactly as the trainer's data layer tokenizes a (prompt, completion)
(una_hpc.data.encode_prompts / encode_completions): the prompt rendered by the chat template as a user turn plus
the generation prompt (the ids the policy generates from), then the response's tokens and EOS (what a finished
completion ends with). Rollouts are scored on their prompt_ids + completion_ids directly, so text rows, training
data and sampled rollouts meet the RM in one format.

Scoring pads on the right with an attention mask; the HF head reads the last non-padding token, so a row's logit
does not depend on what it is batched with (fp32: equal to ~1e-6). Sequences over `max_length` keep their last
`max_length` tokens (the response end, which the head reads).

Tested by: .venv/bin/python -m pytest tests/unit/test_reward_model.py -q
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerBase

from ..data import encode_completions, encode_prompts
from ..data.formats import Prompt
from ..models.policy import load_tokenizer
from .base import Rollout


def encode_pair(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, response: str) -> list[int]:
    """Token ids of prompt + response + EOS, as the trainer and the policy see them (see the module docstring)."""
    return encode_prompts(tokenizer, [prompt])[0] + encode_completions(tokenizer, [response])[0]


def encode_texts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt], responses: Sequence[str]
                 ) -> list[list[int]]:
    """encode_pair for many pairs, batched through the tokenizer."""
    prompt_ids = encode_prompts(tokenizer, list(prompts))
    return [p + c for p, c in zip(prompt_ids, encode_completions(tokenizer, list(responses)))]


def sequence_logits(model: nn.Module, sequences: Sequence[Sequence[int]], pad_token_id: int,
                    max_length: int) -> Tensor:
    """[B] float32 logits of right-padded sequences (with grad when enabled; training and scoring share this)."""
    rows = [list(s)[-max_length:] for s in sequences]
    if any(not r for r in rows):
        raise ValueError("reward model: empty sequence")
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for i, r in enumerate(rows):
        input_ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        attention_mask[i, :len(r)] = 1
    device = next(model.parameters()).device
    out = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), use_cache=False)
    return out.logits[:, 0].float()


@dataclass
class RewardModel:
    """A sequence-classification model with one output and its tokenizer."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    max_length: int = 1024
    """Token limit per scored sequence (longer ones keep their last tokens)."""
    batch_size: int = 16
    """Sequences per forward."""

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32, max_length: int = 1024,
                        batch_size: int = 16) -> RewardModel:
        if not (Path(path) / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not an HF reward model directory (no config.json)")
        tok = load_tokenizer(path)
        model = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=dtype)
        if model.config.num_labels != 1:
            raise ValueError(f"{path}: a reward model needs num_labels=1, this one has {model.config.num_labels}")
        if model.config.pad_token_id is None:  # the head finds each row's last token through the pad id
            model.config.pad_token_id = tok.pad_token_id
        return cls(model.to(device).eval().requires_grad_(False), tok, max_length, batch_size)

    @property
    def pad_token_id(self) -> int:
        return int(self.model.config.pad_token_id)

    def encode(self, prompt: Prompt, response: str) -> list[int]:
        return encode_pair(self.tokenizer, prompt, response)

    @torch.no_grad()
    def score_ids(self, sequences: Sequence[Sequence[int]]) -> Tensor:
        """[N] float32 logits of full token sequences (prompt + response)."""
        out = [sequence_logits(self.model, sequences[i:i + self.batch_size], self.pad_token_id, self.max_length)
               for i in range(0, len(sequences), self.batch_size)]
        return torch.cat(out).cpu() if out else torch.zeros(0)

    def score_texts(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> Tensor:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return self.score_ids(encode_texts(self.tokenizer, prompts, responses))

    def score_rollouts(self, rollouts: Sequence[Rollout]) -> Tensor:
        """Scores sampled rollouts on their own token ids (the RM must share the policy's tokenizer)."""
        return self.score_ids([r.prompt_ids + r.completion_ids for r in rollouts])
