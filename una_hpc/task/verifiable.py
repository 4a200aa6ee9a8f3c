"""A verifiable instruction task for a small chat model (IFEval-style): checkable instructions, an exact gold reward.

    python -m una_hpc.task.verifiable            # a few sample prompts of each split with their checks

No reward model: every prompt carries checks that a few lines of Python decide. Two families:

- instruction (3 in 4): a plain request about an everyday topic ("Describe the moon.") followed by one or two
  instructions, each one fixed sentence:

  - max_words N: `Use at most N words.` Passes with at most N words (exactly N passes).
  - include K: `Include the word "K".` Passes when K occurs as a word.
  - exclude K: `Do not use the word "K".` (K is the topic's own word: hard on purpose.) Passes when it does not.
  - lowercase: `Write your whole answer in lowercase letters.` Passes with a letter and no uppercase letter.
  - bullets K: `Answer as a bulleted list of exactly K items, each line starting with "- ".` Passes when exactly K
    lines start with `-`, `*` or `•` and a space (other lines do not count; "1." numbering is no bullet).
  - json: `Reply only with JSON of the form {"answer": "..."}.` Passes when the whole response (a ```json fence
    allowed) is a JSON object whose only key is "answer", with a non-empty value.

  At most one of bullets / json per prompt; with bullets K the word limit is at least 4K.
- arithmetic (1 in 4): `What is 17 + 25? Answer with the number only.` (+, - with a non-negative result, or
  "times" up to 12 x 12; three phrasings). One check, `answer`: the last number in the response equals the result
  exactly ("The answer is 42." and "17 + 25 = 42" pass; "42, not 43" does not). The last number, not the first:
  SmolLM2-135M writes "2 * 12 = 24" for the number alone, and a first-number rule scored every sample 0, leaving
  the check without any training signal (measured on 256 samples).

Words: runs of letters and digits, inner apostrophes and hyphens kept ("don't", "well-known": one word each; "-" and
"**" are none). Keyword matching is case-insensitive on whole words and accepts the plural endings "s"/"es"
("Oceans" counts as "ocean", "oceanic" does not; "ocean-side" contains "ocean").

`gold_reward(spec, response)` is the fraction of the prompt's checks the response passes, in [0, 1]; an empty
(whitespace-only) response scores 0. Prompts are data: `PromptSpec` holds the text and its checks, and
`parse_prompt(text)` recovers exactly that spec from the text alone (it re-renders its parse and compares), so
`gold_reward_batch(prompts, responses)` scores by prompt text — the trainer calls it by "module:function" without
knowing this task — and returns None when any prompt is not one of this task's.

Splits: a prompt is held out when the sha256 of its text falls in 1/8 of the hash space (`split_of`), so the train and
held-out prompts are disjoint whatever the seeds and counts. `sample_prompts(n, seed, split)` draws n distinct prompts
of one split from a seeded generator (deterministic per seed). Pure Python: no torch.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

INSTRUCTION, ARITHMETIC = "instruction", "arithmetic"
MAX_WORDS, INCLUDE, EXCLUDE, LOWERCASE, BULLETS, JSON_ANSWER, ANSWER = (
    "max_words",
    "include",
    "exclude",
    "lowercase",
    "bullets",
    "json",
    "answer",
)
CHECK_KINDS = (MAX_WORDS, INCLUDE, EXCLUDE, LOWERCASE, BULLETS, JSON_ANSWER, ANSWER)
SPLITS = ("train", "heldout")
HELDOUT_EIGHTHS = 1
"""Held-out share of the prompt space, in eighths of the sha256 space of the prompt text."""
ARITHMETIC_SHARE = 0.25

TOPICS: tuple[tuple[str, str], ...] = (
    ("the ocean", "ocean"),
    ("dogs", "dog"),
    ("cats", "cat"),
    ("the moon", "moon"),
    ("coffee", "coffee"),
    ("rain", "rain"),
    ("trees", "tree"),
    ("bicycles", "bicycle"),
    ("music", "music"),
    ("the sun", "sun"),
    ("bread", "bread"),
    ("winter", "winter"),
    ("books", "book"),
    ("gardens", "garden"),
    ("birds", "bird"),
    ("football", "football"),
    ("mountains", "mountain"),
    ("tea", "tea"),
    ("trains", "train"),
    ("the river", "river"),
    ("pizza", "pizza"),
    ("the beach", "beach"),
    ("snow", "snow"),
    ("apples", "apple"),
    ("computers", "computer"),
    ("school", "school"),
    ("summer", "summer"),
    ("flowers", "flower"),
)
"""(how the request names the topic, the topic's own word: what `exclude` forbids)."""
KEYWORDS = (
    "happy",
    "green",
    "morning",
    "water",
    "family",
    "simple",
    "light",
    "warm",
    "friend",
    "home",
    "small",
    "quiet",
)
"""Words `include` asks for (none is a topic word)."""
REQUESTS = (
    "Write a short paragraph about {topic}.",
    "Describe {topic}.",
    "Tell me about {topic}.",
    "Explain why people like {topic}.",
    "Give me some facts about {topic}.",
    "Write a few sentences about {topic}.",
)
WORD_LIMITS = (10, 15, 20, 25, 30, 40)
BULLET_COUNTS = (2, 3, 4, 5)
INSTRUCTION_TEXT = {
    MAX_WORDS: "Use at most {} words.",
    INCLUDE: 'Include the word "{}".',
    EXCLUDE: 'Do not use the word "{}".',
    LOWERCASE: "Write your whole answer in lowercase letters.",
    BULLETS: 'Answer as a bulleted list of exactly {} items, each line starting with "- ".',
    JSON_ANSWER: 'Reply only with JSON of the form {{"answer": "..."}}.',
}
ARITHMETIC_TEMPLATES = (
    "What is {a} {op} {b}? Answer with the number only.",
    "Compute {a} {op} {b}. Reply with just the number.",
    "Calculate {a} {op} {b} and give only the number.",
)
OPERATORS = ("+", "-", "times")


@dataclass(frozen=True)
class Check:
    kind: str
    """One of CHECK_KINDS."""
    value: int | str | None = None
    """max_words / bullets: N; include / exclude: the keyword; answer: the integer result; else None."""


@dataclass(frozen=True)
class PromptSpec:
    """A prompt and what its gold reward checks."""

    text: str
    family: str
    """INSTRUCTION or ARITHMETIC."""
    checks: tuple[Check, ...]

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "checks": [[c.kind, c.value] for c in self.checks]}


# ------------------------------------------------------------------------------------------------ checks
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?")
_BULLET = re.compile(r"^\s*[-*•]\s+\S")
_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL | re.IGNORECASE)


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def has_keyword(text: str, keyword: str) -> bool:
    """`keyword` as a whole word, case-insensitive, optionally with a plural "s"/"es"."""
    return re.search(rf"(?<![^\W_]){re.escape(keyword)}(?:s|es)?(?![^\W_])", text, re.IGNORECASE) is not None


def last_number(text: str) -> float | None:
    found = _NUMBER.findall(text)
    return float(found[-1]) if found else None


def _json_answer(text: str) -> bool:
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        obj = json.loads(body)
    except ValueError:
        return False
    if not isinstance(obj, dict) or list(obj) != ["answer"]:
        return False
    value = obj["answer"]
    if isinstance(value, str):
        return bool(value.strip())
    return value is not None and not isinstance(value, bool) and value != [] and value != {}


def passes(check: Check, response: str) -> bool:
    kind, value = check.kind, check.value
    if kind == MAX_WORDS:
        return len(words(response)) <= int(value)
    if kind == INCLUDE:
        return has_keyword(response, str(value))
    if kind == EXCLUDE:
        return not has_keyword(response, str(value))
    if kind == LOWERCASE:
        return any(ch.isalpha() for ch in response) and not any(ch.isupper() for ch in response)
    if kind == BULLETS:
        return sum(bool(_BULLET.match(line)) for line in response.splitlines()) == int(value)
    if kind == JSON_ANSWER:
        return _json_answer(response)
    if kind == ANSWER:
        return last_number(response) == float(value)
    raise ValueError(f"unknown check kind {kind!r}; valid: {', '.join(CHECK_KINDS)}")


def check_results(spec: PromptSpec, response: str) -> list[bool]:
    """Pass/fail of each of the prompt's checks (all fail on an empty response)."""
    if not response.strip():
        return [False] * len(spec.checks)
    return [passes(c, response) for c in spec.checks]


def gold_reward(spec: PromptSpec, response: str) -> float:
    """Fraction of the prompt's checks the response passes, in [0, 1]."""
    results = check_results(spec, response)
    return sum(results) / len(results)


# ------------------------------------------------------------------------------------------------ rendering
def _arith_result(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def render_instruction(request: str, topic: str, checks: Sequence[Check]) -> str:
    return " ".join([request.format(topic=topic)] + [INSTRUCTION_TEXT[c.kind].format(c.value) for c in checks])


def render_arithmetic(template: str, a: int, op: str, b: int) -> str:
    return template.format(a=a, op=op, b=b)


# ------------------------------------------------------------------------------------------------ parsing
def _sentence_pattern(kind: str) -> str:
    text = INSTRUCTION_TEXT[kind]
    if "{}" not in text:
        return re.escape(text.format())
    head, tail = text.split("{}")
    value = r"(\d+)" if kind in (MAX_WORDS, BULLETS) else r"([a-z]+)"
    return re.escape(head) + value + re.escape(tail)


_INSTRUCTIONS = [(kind, re.compile(r" " + _sentence_pattern(kind))) for kind in INSTRUCTION_TEXT]
_TOPIC_ALT = "|".join(re.escape(t) for t, _ in TOPICS)
_REQUESTS = [(r, re.compile(re.escape(r).replace(re.escape("{topic}"), f"({_TOPIC_ALT})"))) for r in REQUESTS]
_ARITHMETIC = [
    re.compile(
        "^"
        + re.escape(t)
        .replace(re.escape("{a}"), r"(\d+)")
        .replace(re.escape("{op}"), "(" + "|".join(re.escape(o) for o in OPERATORS) + ")")
        .replace(re.escape("{b}"), r"(\d+)")
        + "$"
    )
    for t in ARITHMETIC_TEMPLATES
]


def _parse_arithmetic(text: str) -> PromptSpec | None:
    for template, pattern in zip(ARITHMETIC_TEMPLATES, _ARITHMETIC):
        m = pattern.match(text)
        if m:
            a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
            if render_arithmetic(template, a, op, b) == text:
                return PromptSpec(text, ARITHMETIC, (Check(ANSWER, _arith_result(a, op, b)),))
    return None


def _parse_instruction(text: str) -> PromptSpec | None:
    for request, pattern in _REQUESTS:
        m = pattern.match(text)
        if not m:
            continue
        topic, pos, checks = m.group(1), m.end(), []
        while pos < len(text):
            for kind, sentence in _INSTRUCTIONS:
                s = sentence.match(text, pos)
                if s:
                    value = (int(s.group(1)) if kind in (MAX_WORDS, BULLETS) else s.group(1)) if s.groups() else None
                    checks.append(Check(kind, value))
                    pos = s.end()
                    break
            else:
                break
        kinds = [c.kind for c in checks]
        if (
            pos == len(text)
            and checks
            and len(set(kinds)) == len(kinds)
            and render_instruction(request, topic, checks) == text
        ):
            return PromptSpec(text, INSTRUCTION, tuple(checks))
    return None


def parse_prompt(text: str) -> PromptSpec | None:
    """The spec of one of this task's prompts, recovered exactly from its text; None for any other text."""
    if not isinstance(text, str):
        return None
    return _parse_arithmetic(text) or _parse_instruction(text)


def prompt_text(prompt: Any) -> str | None:
    """A prompt's text: the string itself, or a message list's last user message."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], dict) and prompt[-1].get("role") == "user":
        content = prompt[-1].get("content")
        return content if isinstance(content, str) else None
    return None


def gold_reward_batch(prompts: list, responses: list[str]) -> list[float] | None:
    """Gold reward of each (prompt, response); None when any prompt is not one of this task's (so a caller falls
    back to its reward model). Prompts are strings or chat message lists (the last user message is read)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    specs = [parse_prompt(prompt_text(p)) for p in prompts]
    if not specs or any(s is None for s in specs):
        return None
    return [gold_reward(s, r) for s, r in zip(specs, responses)]


# ------------------------------------------------------------------------------------------------ generation
def split_of(text: str) -> str:
    """ "heldout" for 1/8 of all prompt texts (by sha256), "train" for the rest."""
    return "heldout" if hashlib.sha256(text.encode()).digest()[0] % 8 < HELDOUT_EIGHTHS else "train"


def _draw_instruction(rng: random.Random) -> PromptSpec:
    request = rng.choice(REQUESTS)
    topic, topic_word = rng.choice(TOPICS)
    kinds = [MAX_WORDS, INCLUDE, EXCLUDE, LOWERCASE, BULLETS, JSON_ANSWER]
    chosen = rng.sample(kinds, rng.choice((1, 2)))
    if BULLETS in chosen and JSON_ANSWER in chosen:
        chosen.remove(rng.choice((BULLETS, JSON_ANSWER)))
    bullets = rng.choice(BULLET_COUNTS)
    checks = []
    for kind in chosen:
        if kind == MAX_WORDS:
            limits = [n for n in WORD_LIMITS if BULLETS not in chosen or n >= 4 * bullets]
            checks.append(Check(kind, rng.choice(limits)))
        elif kind == INCLUDE:
            checks.append(Check(kind, rng.choice(KEYWORDS)))
        elif kind == EXCLUDE:
            checks.append(Check(kind, topic_word))
        elif kind == BULLETS:
            checks.append(Check(kind, bullets))
        else:
            checks.append(Check(kind))
    return PromptSpec(render_instruction(request, topic, checks), INSTRUCTION, tuple(checks))


def _draw_arithmetic(rng: random.Random) -> PromptSpec:
    op = rng.choice(OPERATORS)
    if op == "times":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
    else:
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        if op == "-" and a < b:
            a, b = b, a
    text = render_arithmetic(rng.choice(ARITHMETIC_TEMPLATES), a, op, b)
    return PromptSpec(text, ARITHMETIC, (Check(ANSWER, _arith_result(a, op, b)),))


def draw_prompt(rng: random.Random) -> PromptSpec:
    return _draw_arithmetic(rng) if rng.random() < ARITHMETIC_SHARE else _draw_instruction(rng)


def sample_prompts(n: int, seed: int = 0, split: str = "train") -> list[PromptSpec]:
    """n distinct prompts of `split`, deterministic per (seed, split)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    rng = random.Random(f"una-hpc verifiable {split} {seed}")
    out: list[PromptSpec] = []
    seen: set[str] = set()
    for _ in range(200 * n + 1000):
        if len(out) == n:
            break
        spec = draw_prompt(rng)
        if spec.text in seen or split_of(spec.text) != split:
            continue
        seen.add(spec.text)
        out.append(spec)
    if len(out) < n:
        raise ValueError(f"could not draw {n} distinct {split} prompts (got {len(out)})")
    return out


def main() -> None:
    for split in SPLITS:
        print(f"--- {split}")
        for spec in sample_prompts(6, seed=0, split=split):
            print(f"{spec.text}\n    checks: {[(c.kind, c.value) for c in spec.checks]}")


if __name__ == "__main__":
    main()
