"""A small word list and random sentences over it: the text every tiny tokenizer and model of the tests is built on.

Test modules import it as `from text_corpus import WORDS, corpus` (tests/ is on sys.path through the root conftest);
importing from `conftest` would be ambiguous, as tests/distributed has a conftest of its own.
"""
from __future__ import annotations

import random

WORDS = ("the a cat dog sat on mat one two three four five six red blue green is are and or not "
         "count list sort add yes no please answer question").split()


def corpus(n: int = 200, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]
