"""A small word list and random sentences over it: the text every tiny tokenizer and model of the tests is built on.

Test modules import it as `from text_corpus import WORDS, corpus` (tests/ is on sys.path through the root conftest);
importing from `conftest` would be ambiguous, as tests/distributed has a conftest of its own.
"""

from __future__ import annotations

import random

WORDS = (
    "the a cat dog sat on mat one two three four five six red blue green is are and or not "
    "count list sort add yes no please answer question"
).split()


def corpus(n: int = 200, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]


SCORE_WORDS = WORDS[:16]
"""The words of the scored test data ("the" ... "green")."""


def scored_rows(
    num_prompts: int = 24, per_prompt: int = 2, seed: int = 0, score=None, words: list[str] = SCORE_WORDS
) -> list[dict]:
    """Rows of the `score` format: 4-word prompts, each with `per_prompt` responses of 2-8 words over `words`;
    the score is uniform in [0, 1) (drawn after its response), or `score(prompt, response)` when given."""
    rng = random.Random(seed)
    rows = []
    for _ in range(num_prompts):
        prompt = " ".join(rng.choice(words) for _ in range(4))
        for _ in range(per_prompt):
            response = " ".join(rng.choice(words) for _ in range(rng.randint(2, 8)))
            rows.append(
                {
                    "prompt": prompt,
                    "response": response,
                    "score": rng.random() if score is None else score(prompt, response),
                }
            )
    return rows


def write_jsonl(path, rows: list[dict]):
    """`rows` as JSON lines at `path` (a pathlib.Path); returns the path."""
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
