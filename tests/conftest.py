"""Shared fixtures: a tiny Llama model dir (random weights, local tokenizer), built once per session."""
from __future__ import annotations

import os
import random
import shutil

# The Triton kernels run under the interpreter on CPU. The flag is read when triton is first imported, and other
# modules (vLLM, transformers) may import triton before the kernel tests do: set it before anything is collected.
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")

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
