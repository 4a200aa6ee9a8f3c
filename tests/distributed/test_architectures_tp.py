"""The vocabulary-parallel head on 2 gloo ranks equals HF's own log_softmax(logits) for transformed heads.

    .venv/bin/python -m pytest tests/distributed/test_architectures_tp.py -q      (about 30 s on 2 cores)

For Gemma-2 (final_logit_softcapping 3), Phi (lm_head bias), Cohere (logit_scale 0.25) and Granite
(1 / logits_scaling) from tests/arch_models.py, each rank holds an uneven slice of the lm_head rows (and of the bias)
and calls `vocab_parallel_seq_logps(..., bias_shard=, scale=, softcap=)` with the transform `output_head` reads from
the model. The reference is the HF model's own forward, each sequence alone: per-sequence sums of
log_softmax(logits) in float64, and their gradient with respect to the final hidden state (the lm_head's input, taken
by a pre-hook) and to the lm_head weight and bias.

Both sides see the same final hidden states (HF's, concatenated as one packed [T, H] block with seq_index), so the
test isolates the sharded head; packing itself is tested in tests/unit/test_architectures.py. Chunks of 8 tokens
force the chunked path and the recompute in backward.
Tolerance (fp32): values 1e-4 nats per labelled token; every gradient 1e-4 of its own largest entry.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from arch_models import ARCHS, VOCAB, save_tiny
from dist_helpers import free_port

pytestmark = pytest.mark.slow
MODELS = ("gemma2", "phi", "cohere", "granite")
WORLD = 2
SPLIT = 170  # rank 0 holds vocabulary rows [0, 170), rank 1 [170, 320): uneven on purpose
TOKEN_TOL, GRAD_TOL = 1e-4, 1e-4


def sequences(seed: int = 0) -> list[tuple[list[int], int]]:
    """(token ids, prompt length): four sequences of 5 to 12 tokens, random ids above the special ones."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(3, VOCAB, (n,), generator=g).tolist(), p) for n, p in ((9, 3), (12, 3), (11, 4), (5, 2))]


def hf_reference(model, seqs, upstream: torch.Tensor):
    """HF's own forward per sequence: the lm_head input (final hidden state, as a leaf), float64 log_softmax sums of
    the model's logits, and the gradients of sum(upstream * logps) wrt the hidden states and the lm_head."""
    head = model.get_output_embeddings()
    leaves = []

    def swap_in_leaf(_module, args):  # the decoder part is cut off: gradients stop at the final hidden state
        leaves.append(args[0].detach().requires_grad_(True))
        return (leaves[-1],)

    handle = head.register_forward_pre_hook(swap_in_leaf)
    try:
        sums = []
        for ids, prompt_len in seqs:
            logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
            logp = logits.double().log_softmax(-1)
            t = torch.arange(prompt_len - 1, len(ids) - 1)
            sums.append(logp[t, torch.tensor(ids[prompt_len:])].sum())
    finally:
        handle.remove()
    logps = torch.stack(sums)
    model.zero_grad(set_to_none=True)
    (logps * upstream).sum().backward()
    hidden = torch.cat([leaf[0] for leaf in leaves])
    grad_hidden = torch.cat([leaf.grad[0] for leaf in leaves])
    grad_bias = None if getattr(head, "bias", None) is None else head.bias.grad
    return hidden.detach(), logps.detach(), grad_hidden, head.weight.grad, grad_bias


def packed_labels(seqs) -> tuple[torch.Tensor, torch.Tensor]:
    """labels [T] (position t predicts token t+1 of its sequence's completion, else -100) and seq_index [T]."""
    labels, seq_index = [], []
    for s, (ids, prompt_len) in enumerate(seqs):
        lab = [-100] * len(ids)
        lab[prompt_len - 1 : len(ids) - 1] = ids[prompt_len:]
        labels += lab
        seq_index += [s] * len(ids)
    return torch.tensor(labels), torch.tensor(seq_index)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).abs().max() / want.double().abs().max().clamp_min(1e-30))


def compare(name: str, path: str, group, rank: int) -> dict:
    from transformers import AutoModelForCausalLM

    from una_hpc.models.output_head import verify_output_head
    from una_hpc.parallel import vocab_parallel_seq_logps

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa").eval()
    head = verify_output_head(model)  # the transform the trainer would pass: bias, scale, softcap
    seqs = sequences()
    upstream = torch.tensor([1.0, -0.5, 0.25, 2.0], dtype=torch.float64)
    hidden, want, want_gh, want_gw, want_gb = hf_reference(model, seqs, upstream)
    labels, seq_index = packed_labels(seqs)

    lo, hi = (0, SPLIT) if rank == 0 else (SPLIT, VOCAB)
    h = hidden.clone().requires_grad_(True)
    w_shard = head.weight.detach()[lo:hi].clone().requires_grad_(True)
    b_shard = None if head.bias is None else head.bias.detach()[lo:hi].clone().requires_grad_(True)
    got = vocab_parallel_seq_logps(
        h,
        w_shard,
        lo,
        labels,
        seq_index,
        len(seqs),
        group,
        bias_shard=b_shard,
        scale=head.scale,
        softcap=head.softcap,
        chunk_size=8,
    )
    (got.double() * upstream).sum().backward()
    with torch.no_grad():  # the same head with its transform dropped: must be far off, or the test proves nothing
        plain = vocab_parallel_seq_logps(hidden, w_shard, lo, labels, seq_index, len(seqs), group, chunk_size=8)

    n_labelled = torch.tensor([len(ids) - p for ids, p in seqs], dtype=torch.float64)
    return {
        "transform": {"bias": head.bias is not None, "scale": head.scale, "softcap": head.softcap},
        "values_over_tol": float(((got.double() - want).abs() / (TOKEN_TOL * n_labelled)).max()),
        "plain_min_gap": float((plain.double() - want).abs().min()),
        "grad_hidden": rel_err(h.grad, want_gh),
        "grad_weight": rel_err(w_shard.grad, want_gw[lo:hi]),
        "grad_bias": None if b_shard is None else rel_err(b_shard.grad, want_gb[lo:hi]),
        "grad_hidden_scale": float(want_gh.abs().max()),
    }


def rank_main(rank: int, paths: dict, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        results = {name: compare(name, path, dist.group.WORLD, rank) for name, path in paths.items()}
        Path(out, f"rank{rank}.json").write_text(json.dumps(results))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_vocab_parallel_heads_equal_hf(tmp_path):
    paths = {name: str(save_tiny(ARCHS[name], tmp_path / name)) for name in MODELS}
    mp.spawn(rank_main, args=(paths, free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert set(results) == set(MODELS)
        for name, r in results.items():
            t = r["transform"]
            assert {
                "gemma2": t["softcap"] == 3.0,
                "phi": t["bias"],
                "cohere": t["scale"] == 0.25,
                "granite": math.isclose(t["scale"], 1 / 4.0),
            }[name], (name, t)
            assert r["values_over_tol"] <= 1.0, (rank, name, r)
            assert r["plain_min_gap"] > 1e-2, (rank, name, r)  # the transform changes every sequence
            assert r["grad_hidden_scale"] > 0 and r["grad_hidden"] <= GRAD_TOL, (rank, name, r)
            assert r["grad_weight"] <= GRAD_TOL, (rank, name, r)
            assert (r["grad_bias"] is not None) == t["bias"], (rank, name, r)
            if t["bias"]:
                assert r["grad_bias"] <= GRAD_TOL, (rank, name, r)
