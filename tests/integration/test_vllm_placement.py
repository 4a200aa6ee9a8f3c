"""A rank's vLLM engine on its own device: the LOCAL_RANK executor (una_hpc/rollout/vllm_placement.py).

    .venv/bin/python -m pytest tests/integration/test_vllm_placement.py -q      (about 20 s: one engine start)

On this CPU machine the executor's device index cannot pick a GPU, so the tests check what can be checked: vLLM
accepts the class, its engine generates greedily what HF's generate does, the index it hands
the worker follows LOCAL_RANK, and the trainer asks for it only on CUDA ranks other than local rank 0.
"""

from __future__ import annotations

import types

import pytest
import torch
from rollout_refs import hf_greedy
from transformers import AutoModelForCausalLM, AutoTokenizer

from una_hpc.data import encode_prompts
from una_hpc.rollout import SamplingSettings, VLLMEngine, module_available
from una_hpc.rollout.vllm_placement import local_rank_executor, rank_engine_args

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not module_available("vllm"), reason="vLLM is not installed")]


def test_executor_device_index_follows_local_rank(monkeypatch):
    executor = local_rank_executor()
    bare = object.__new__(executor)  # only _distributed_args is exercised: no engine behind it
    bare.vllm_config = types.SimpleNamespace(device_config=types.SimpleNamespace(device=torch.device("cuda")))
    for rank in (0, 1, 3):
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        _, global_rank, device_index = bare._distributed_args()
        assert (global_rank, device_index) == (0, rank)  # vLLM's own world stays one process: rank 0 of 1


def test_only_cuda_ranks_past_the_first_get_it(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert rank_engine_args(cuda=True) == {"distributed_executor_backend": local_rank_executor()}
    assert rank_engine_args(cuda=False) == {}
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert rank_engine_args(cuda=True) == {}


def test_engine_with_the_executor_generates_greedy_as_hf(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "0")
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    prompts = encode_prompts(tok, ["count one two", "the red cat sat on the mat and", "yes"])
    engine = VLLMEngine(
        tiny_model_dir,
        max_model_len=128,
        gpu_memory_utilization=0.12,
        engine_args={"distributed_executor_backend": local_rank_executor()},
    )
    try:
        assert isinstance(engine._llm.llm_engine.engine_core.engine_core.model_executor, local_rank_executor())
        rollouts = engine.generate(prompts, n=1, params=SamplingSettings(max_new_tokens=16, temperature=0.0))
    finally:
        engine.close()
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    for r in rollouts:
        assert r.completion_ids == hf_greedy(model, r.prompt_ids, 16) and r.completion_ids
