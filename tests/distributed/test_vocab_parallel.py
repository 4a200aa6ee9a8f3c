"""Vocabulary-parallel seq logps over real gloo process groups (2 and 3 processes) vs the unsharded reference.

    .venv/bin/python -m pytest tests/distributed/test_vocab_parallel.py -q      (about 35 s on 2 cores)

Each process holds an uneven vocabulary shard (V = 301) and the same hidden states; values and gradients (hidden:
all-reduced over the group; weight: this rank's rows) must equal the single-process log_softmax reference. Chunks of
8 tokens force the chunked path and the recompute in backward. The 3-process run also checks an explicit sub-group:
ranks {0, 2} shard the vocabulary over a group that excludes rank 1. The "head" runs add a sharded bias, a scale and a
softcap (z = softcap * tanh(scale * (h @ W.T + b) / softcap)) and check the bias shard's gradient too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from dist_helpers import free_port

pytestmark = pytest.mark.slow
T, H, V, S = 37, 16, 301, 6
HEAD = dict(scale=1.7, softcap=4.0)  # logits have std ~4 here: well inside tanh's curved range


def problem(dtype: torch.dtype):
    g = torch.Generator().manual_seed(7)
    hidden = torch.randn(T, H, generator=g, dtype=torch.float64).to(dtype)
    weight = torch.randn(V, H, generator=g, dtype=torch.float64).to(dtype)
    labels = torch.randint(0, V, (T,), generator=g)
    labels[torch.rand(T, generator=g) < 0.25] = -100
    seq_index = torch.sort(torch.randint(0, S - 1, (T,), generator=g)).values  # sequence S - 1 stays empty
    upstream = torch.randn(S, generator=g, dtype=torch.float64)
    bias = torch.randn(V, generator=g, dtype=torch.float64).to(dtype)
    return hidden, weight, labels, seq_index, upstream, bias


def bounds(n_shards: int) -> list[tuple[int, int]]:
    sizes = [V // n_shards + (1 if r < V % n_shards else 0) for r in range(n_shards)]
    starts = [sum(sizes[:r]) for r in range(n_shards)]
    return [(s, s + n) for s, n in zip(starts, sizes)]


def compare(group, shard_rank: int, n_shards: int, dtype: torch.dtype, head: bool = False) -> dict:
    """Sharded vs reference for one dtype (with a bias + scale + softcap head if `head`); returns max abs errors and
    the scale of each quantity."""
    from una_hpc.parallel import reference_seq_logps, vocab_parallel_seq_logps

    hidden, weight, labels, seq_index, upstream, bias = problem(dtype)
    lo, hi = bounds(n_shards)[shard_rank]
    kw = HEAD if head else {}
    h = hidden.clone().requires_grad_(True)
    w_shard = weight[lo:hi].clone().requires_grad_(True)
    b_shard = bias[lo:hi].clone().requires_grad_(True) if head else None
    logps = vocab_parallel_seq_logps(
        h, w_shard, lo, labels, seq_index, S, group, bias_shard=b_shard, chunk_size=8, **kw
    )
    (logps.double() * upstream).sum().backward()
    with torch.no_grad():
        no_grad_logps = vocab_parallel_seq_logps(
            hidden,
            weight[lo:hi],
            lo,
            labels,
            seq_index,
            S,
            group,
            bias_shard=bias[lo:hi] if head else None,
            chunk_size=8,
            **kw,
        )

    rh, rw = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    rb = bias.clone().requires_grad_(True) if head else None
    ref, _ = reference_seq_logps(rh, rw, labels, seq_index, S, bias=rb, **kw)
    (ref.double() * upstream).sum().backward()
    extra = {}
    if head:
        extra = {
            "grad_bias": float((b_shard.grad - rb.grad[lo:hi]).abs().max()),
            "grad_bias_scale": float(rb.grad[lo:hi].abs().max()),
        }
    return {
        **extra,
        "logps": float((logps - ref).abs().max()),
        "logps_scale": float(ref.abs().max()),
        "no_grad": float((no_grad_logps - ref).abs().max()),
        "grad_hidden": float((h.grad - rh.grad).abs().max()),
        "grad_hidden_scale": float(rh.grad.abs().max()),
        "grad_weight": float((w_shard.grad - rw.grad[lo:hi]).abs().max()),
        "grad_weight_scale": float(rw.grad[lo:hi].abs().max()),
        "empty_seq": float(logps[S - 1]),
        "dtype": str(dtype),
        "shard": [lo, hi],
    }


def rank_main(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    results = {f"world_{dt}": compare(dist.group.WORLD, rank, world, dt) for dt in (torch.float64, torch.float32)}
    for dt in (torch.float64, torch.float32):
        results[f"head_{dt}"] = compare(dist.group.WORLD, rank, world, dt, head=True)
    if world == 3:
        sub = dist.new_group([0, 2])  # collective: every rank creates it
        if rank != 1:
            results["subgroup"] = compare(sub, dist.get_rank(sub), 2, torch.float64)
    Path(out, f"rank{rank}.json").write_text(json.dumps(results))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 3])
def test_vocab_parallel_equals_unsharded(world, tmp_path):
    mp.spawn(rank_main, args=(world, free_port(), str(tmp_path)), nprocs=world, join=True)
    seen_subgroup = seen_head = 0
    for rank in range(world):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for name, r in results.items():
            tol = 1e-10 if r["dtype"] == "torch.float64" else 2e-5
            assert r["logps"] <= tol * r["logps_scale"], (rank, name, r)
            assert r["no_grad"] <= tol * r["logps_scale"], (rank, name, r)
            assert r["grad_hidden"] <= tol * r["grad_hidden_scale"], (rank, name, r)
            assert r["grad_weight"] <= tol * max(r["grad_weight_scale"], 1.0), (rank, name, r)
            if name.startswith("head_"):
                seen_head += 1
                assert r["grad_bias"] <= tol * max(r["grad_bias_scale"], 1.0), (rank, name, r)
                assert r["grad_bias_scale"] > 0
            assert r["empty_seq"] == 0.0
            assert r["grad_hidden_scale"] > 0 and r["grad_weight_scale"] > 0
            seen_subgroup += name == "subgroup"
    assert seen_subgroup == (2 if world == 3 else 0)
    assert seen_head == 2 * world
