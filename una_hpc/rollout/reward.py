"""Reward models: an HF AutoModelForSequenceClassification (num_labels=1) that scores (prompt, response) pairs.

    rm = RewardModel.from_pretrained("runs/default/reward_model")
    rm.score_texts(["count to three"], ["one two three"])     # tensor([logit]) float32
    rm.score_rollouts(rollouts, prompts, policy_tokenizer)    # the online loop: sampled rollouts of `prompts`

How a pair becomes tokens (`encode_pair`): exactly as the trainer's data layer tokenizes a (prompt, completion)
(una_hpc.data.encode_prompts / encode_completions): the prompt rendered by the chat template as a user turn plus
the generation prompt (the ids the policy generates from), then the response's tokens and EOS (what a finished
completion ends with).

How a rollout becomes tokens (`score_rollouts`): rollouts carry the *policy's* token ids, which mean something
else to a reward model with another tokenizer (e.g. a Mistral policy scored by a Llama-3.2 RM). So:
- Same tokenizer (`same_tokenizer`: equal `get_vocab()`, eos/bos/pad ids and `chat_template`; decided once per
  policy tokenizer): prompt_ids + completion_ids are scored as they are, no decoding.
- Otherwise: the completion is decoded with the policy tokenizer (a trailing policy EOS dropped, special tokens
  skipped) and re-encoded with the prompt of the rollout (`prompts[r.prompt_index]`, a string or a message list)
  through `encode_texts`, i.e. with the RM's tokenizer and chat template, as the RM's training data was. The RM's
  EOS ends the sequence only when the policy's did: a completion cut at max_new_tokens stays unfinished, as on
  the same-tokenizer path.
Without a policy tokenizer, rollouts are scored on their own ids (the caller vouches that the tokenizers match).

Scoring pads on the right with an attention mask; the HF head reads the last non-padding token, so a row's logit
does not depend on what it is batched with (fp32: equal to ~1e-6). Sequences over `max_length` keep their last
`max_length` tokens (the response end, which the head reads).

Tested by: .venv/bin/python -m pytest tests/unit/test_reward_model.py -q
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerBase

from ..data import encode_completions, encode_prompts
from ..data.formats import Prompt
from ..hub import local_dir
from ..models.policy import load_tokenizer
from .base import Rollout


def same_tokenizer(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """Whether ids from `a` mean the same to `b`: same vocabulary, special-token ids and chat template."""

    def key(t: PreTrainedTokenizerBase) -> tuple:
        return t.eos_token_id, t.bos_token_id, t.pad_token_id, getattr(t, "chat_template", None)

    return a is b or (key(a) == key(b) and a.get_vocab() == b.get_vocab())


def encode_pair(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, response: str) -> list[int]:
    """Token ids of prompt + response + EOS, as the trainer and the policy see them (see the module docstring)."""
    return encode_prompts(tokenizer, [prompt])[0] + encode_completions(tokenizer, [response])[0]


def encode_texts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt], responses: Sequence[str]
) -> list[list[int]]:
    """encode_pair for many pairs, batched through the tokenizer."""
    prompt_ids = encode_prompts(tokenizer, list(prompts))
    return [p + c for p, c in zip(prompt_ids, encode_completions(tokenizer, list(responses)))]


def sequence_logits(model: nn.Module, sequences: Sequence[Sequence[int]], pad_token_id: int, max_length: int) -> Tensor:
    """[B] float32 logits of right-padded sequences (with grad when enabled; training and scoring share this)."""
    rows = [list(s)[-max_length:] for s in sequences]
    if any(not r for r in rows):
        raise ValueError("reward model: empty sequence")
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        attention_mask[i, : len(r)] = 1
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
    _shared: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    """id(policy tokenizer) -> (that tokenizer, whether it is the same as ours); see `shares_tokenizer`."""

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        max_length: int = 1024,
        batch_size: int = 16,
    ) -> RewardModel:
        path = local_dir(str(path), setting="reward model")  # a dir, or a Hub id through the Hub cache
        if not (path / "config.json").is_file():
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
        out = [
            sequence_logits(self.model, sequences[i : i + self.batch_size], self.pad_token_id, self.max_length)
            for i in range(0, len(sequences), self.batch_size)
        ]
        return torch.cat(out).cpu() if out else torch.zeros(0)

    def score_texts(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> Tensor:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return self.score_ids(encode_texts(self.tokenizer, prompts, responses))

    def shares_tokenizer(self, policy_tokenizer: PreTrainedTokenizerBase) -> bool:
        """`same_tokenizer(policy_tokenizer, self.tokenizer)`, decided once per policy tokenizer (the vocabulary
        comparison is not free on 100k-token vocabularies, and the answer cannot change during a run)."""
        key = id(policy_tokenizer)
        if key not in self._shared:  # holding the tokenizer keeps its id from being reused by another object
            self._shared[key] = (policy_tokenizer, same_tokenizer(policy_tokenizer, self.tokenizer))
        return self._shared[key][1]

    def score_rollouts(
        self,
        rollouts: Sequence[Rollout],
        prompts: Sequence[Prompt] | None = None,
        policy_tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> Tensor:
        """[N] float32 logits of sampled rollouts; `prompts[r.prompt_index]` is rollout r's prompt (see the module
        docstring). Without `policy_tokenizer`, the rollouts' own ids are scored."""
        if policy_tokenizer is None or self.shares_tokenizer(policy_tokenizer):
            return self.score_ids([r.prompt_ids + r.completion_ids for r in rollouts])
        if prompts is None:
            raise ValueError(
                "reward model: its tokenizer differs from the policy's, so scoring rollouts needs their prompts"
            )
        return self.score_ids(self.reencode(rollouts, prompts, policy_tokenizer))

    def reencode(
        self, rollouts: Sequence[Rollout], prompts: Sequence[Prompt], policy_tokenizer: PreTrainedTokenizerBase
    ) -> list[list[int]]:
        """The RM's token ids of each rollout: its prompt and decoded completion, encoded as training pairs are."""
        eos = policy_tokenizer.eos_token_id
        finished = [bool(r.completion_ids) and r.completion_ids[-1] == eos for r in rollouts]
        responses = policy_tokenizer.batch_decode(
            [r.completion_ids[:-1] if f else r.completion_ids for r, f in zip(rollouts, finished)],
            skip_special_tokens=True,
        )
        sequences = encode_texts(self.tokenizer, [prompts[r.prompt_index] for r in rollouts], responses)
        # encode_texts ends every sequence with the RM's EOS; an unfinished completion must not claim one.
        return [s if f else s[:-1] for s, f in zip(sequences, finished)]
