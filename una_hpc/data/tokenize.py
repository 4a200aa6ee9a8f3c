"""Examples -> token ids: (prompt_ids, completion_ids) per sequence, deterministic, batched through the tokenizer.

Rendering:
- Tokenizer with a chat template: the prompt (a string is one user message) is rendered by
  `apply_chat_template(..., add_generation_prompt=True)` and tokenized without extra special tokens; the completion
  is the assistant content tokenized without special tokens, plus eos.
- Without a chat template: a string prompt is tokenized as is (with the tokenizer's own special tokens, e.g. bos);
  a message list is a one-line DataError naming its row (guessing a chat format would train on a prompt layout
  the model never sees at inference); completion = content + eos.

Lengths: the prompt limit is min(data.max_prompt_length, max_length - 1) so at least one completion token fits.
A longer prompt follows data.truncation: "truncate_prompt" keeps its last tokens, "drop" drops the example (a pair
as a whole), "error" raises a one-line DataError naming the source row. Then prompt + completion is cut to
max_length by truncating the completion's end (its eos is then lost, as in TRL).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import DataConfig
from .example import Example
from .formats import Prompt, prompt_key
from .io import DataError, Problem

TRUNCATION_POLICIES = ("error", "drop", "truncate_prompt")


@dataclass
class TokenizedExample:
    example_id: int
    feedback: str
    """"pairwise", "binary" or "score"."""
    sequences: list[tuple[list[int], list[int]]]
    """(prompt_ids, completion_ids) per sequence; pairwise: [chosen, rejected]."""
    target: float
    """binary label, score, or nan for pairs."""

    @property
    def num_tokens(self) -> int:
        return sum(len(p) + len(c) for p, c in self.sequences)


@dataclass
class TokenizeResult:
    examples: list[TokenizedExample]
    dropped: list[int] = field(default_factory=list)
    """example_ids dropped by truncation="drop"."""
    truncated_prompts: int = 0
    """Examples whose prompt lost its first tokens (truncation="truncate_prompt")."""
    truncated_completions: int = 0
    """Sequences whose completion was cut at max_length."""


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


NO_TEMPLATE = (
    "a message list needs a tokenizer with a chat template, and this tokenizer has none "
    "(give it one, e.g. tokenizer.chat_template in the model dir, or write the prompts as strings)"
)


def _prompt_text(tokenizer: Any, prompt: Prompt) -> str:
    if has_chat_template(tokenizer):
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return prompt  # a string: encode_prompts refused message lists already


def _encode(tokenizer: Any, texts: list[str], special: bool) -> list[list[int]]:
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=special)["input_ids"]]


def encode_prompts(
    tokenizer: Any, prompts: Sequence[Prompt], source: str = "<data>", rows: Sequence[int | None] | None = None
) -> list[list[int]]:
    """Token ids of each prompt as the model sees it before the completion (deduplicated, batched). A prompt the
    chat template rejects (e.g. a role it does not support) is a one-line DataError naming its row."""
    keys = [prompt_key(p) for p in prompts]
    unique: dict[str, int] = {}
    for i, k in enumerate(keys):
        unique.setdefault(k, i)
    texts = []
    for i in unique.values():
        if not has_chat_template(tokenizer) and not isinstance(prompts[i], str):
            raise DataError.one(source, NO_TEMPLATE, rows[i] if rows is not None else None, "prompt")
        try:
            texts.append(_prompt_text(tokenizer, prompts[i]))
        except Exception as e:  # noqa: BLE001 - jinja raises various errors; each becomes one line
            raise DataError.one(
                source,
                f"the chat template cannot render it ({str(e).splitlines()[0][:160]})",
                rows[i] if rows is not None else None,
                "prompt",
            ) from None
    special = not has_chat_template(tokenizer)  # a template renders its own bos
    ids = dict(zip(unique, _encode(tokenizer, texts, special)))
    return [ids[k] for k in keys]


def encode_completions(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Completion ids: the content without special tokens, plus eos."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos token; completions must end with one")
    return [ids + [eos] for ids in _encode(tokenizer, list(texts), False)]


def prompt_limit(max_prompt_length: int, max_length: int | None) -> int:
    """Tokens a prompt may have: max_prompt_length, and room for one completion token within max_length."""
    limit = max_prompt_length if max_length is None else min(max_prompt_length, max_length - 1)
    if limit < 1:
        raise ValueError(f"no room for a prompt: max_prompt_length={max_prompt_length}, max_length={max_length}")
    return limit


def over_limit_message(n: int, limit: int, policy: str) -> str:
    return f"prompt has {n} tokens, over the limit of {limit} (data.truncation={policy})"


def tokenize_examples(
    examples: Sequence[Example],
    tokenizer: Any,
    *,
    max_length: int,
    max_prompt_length: int,
    truncation: str = "truncate_prompt",
    source: str = "<data>",
) -> list[TokenizedExample]:
    """Tokenize every example's sequences (see the module docstring); dropped examples are left out."""
    return tokenize_with_stats(
        examples,
        tokenizer,
        max_length=max_length,
        max_prompt_length=max_prompt_length,
        truncation=truncation,
        source=source,
    ).examples


def tokenize_data(
    examples: Sequence[Example], tokenizer: Any, data_cfg: DataConfig, max_length: int, source: str = "<data>"
) -> TokenizeResult:
    """`tokenize_with_stats` with the limits and policy of a DataConfig."""
    return tokenize_with_stats(
        examples,
        tokenizer,
        max_length=max_length,
        max_prompt_length=data_cfg.max_prompt_length,
        truncation=data_cfg.truncation,
        source=source,
    )


def tokenize_with_stats(
    examples: Sequence[Example],
    tokenizer: Any,
    *,
    max_length: int,
    max_prompt_length: int,
    truncation: str = "truncate_prompt",
    source: str = "<data>",
) -> TokenizeResult:
    """Tokenized examples plus what the length policy did (dropped ids, truncation counts)."""
    policy = truncation
    if policy not in TRUNCATION_POLICIES:
        raise ValueError(f"data.truncation must be one of {', '.join(TRUNCATION_POLICIES)}, got {policy!r}")
    limit = prompt_limit(max_prompt_length, max_length)
    prompts = encode_prompts(
        tokenizer, [ex.prompt for ex in examples], source, [ex.rows[0] if ex.rows else None for ex in examples]
    )
    flat = encode_completions(tokenizer, [c for ex in examples for c in ex.completions])
    result = TokenizeResult([])
    problems: list[Problem] = []
    pos = 0
    for ex, prompt_ids in zip(examples, prompts):
        completions = flat[pos : pos + len(ex.completions)]
        pos += len(ex.completions)
        if not prompt_ids:
            raise DataError.one(source, "prompt renders to no tokens", ex.rows[0] if ex.rows else None, "prompt")
        if len(prompt_ids) > limit:
            if policy == "error":
                problems.append(
                    Problem(
                        source,
                        ex.rows[0] if ex.rows else None,
                        "prompt",
                        over_limit_message(len(prompt_ids), limit, policy),
                    )
                )
                continue
            if policy == "drop":
                result.dropped.append(ex.example_id)
                continue
            prompt_ids = prompt_ids[-limit:]
            result.truncated_prompts += 1
        room = max_length - len(prompt_ids)
        sequences = []
        for c in completions:
            if len(c) > room:
                c = c[:room]
                result.truncated_completions += 1
            sequences.append((list(prompt_ids), c))
        result.examples.append(TokenizedExample(ex.example_id, ex.feedback, sequences, float(ex.target)))
    if problems:
        raise DataError(list(dict.fromkeys(problems)))  # a row can feed several examples: report it once
    return result
