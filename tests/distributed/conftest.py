"""Fixtures for the distributed tests: a tiny Llama whose attention AutoTP can shard (2 KV heads)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

WORDS = "the a cat dog sat on mat one two three four five red blue green is are and or not yes no".split()


@pytest.fixture(scope="session")
def tiny_tp_model_dir(tmp_path_factory) -> Path:
    from una_hpc.models.tiny import build_tiny_model

    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(200)]
    return build_tiny_model(tmp_path_factory.mktemp("tiny_llama_kv2"), texts, vocab_size=300, kv_heads=2)
