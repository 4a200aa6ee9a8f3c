"""Shared fixtures: a tiny Llama model dir (random weights, local tokenizer), built once per session."""
from __future__ import annotations

import random

import pytest

WORDS = ("the a cat dog sat on mat one two three four five six red blue green is are and or not "
         "count list sort add yes no please answer question").split()


def corpus(n: int = 200, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from una_hpc.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_llama"), corpus(), vocab_size=300)
