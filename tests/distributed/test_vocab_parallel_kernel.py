"""Vocabulary-parallel seq logps on the fused kernel (two gloo processes, Triton interpreter) vs the float64 reference.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/distributed/test_vocab_parallel_kernel.py -q

The problem of test_vocab_parallel.py (V = 301 in uneven shards, T = 37, H = 16, a quarter of the labels ignored, an
empty sequence) in float32, with a bias + scale + softcap head: values of policy and reference and gradients of hidden
(summed over the group), of the weight shard and of the bias shard against reference_seq_logps in float64. The engine
dispatches to this path when its tp_logps_backend picks the kernel and keeps the torch path on CPU by default.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from dist_helpers import free_port
from test_vocab_parallel import HEAD, S, V, bounds, problem

pytest.importorskip("triton")

# name: (bias + scale + softcap head, reference: "own" weight / hidden / bias, "shared" W, "self" (policy), None)
CASES = {
    "head_own_ref": (True, "own"),
    "head_shared_w": (True, "shared"),
    "plain_self_ref": (False, "self"),
    "plain_no_ref": (False, None),
    "empty_shard": (True, "own"),  # rank 0 holds the whole vocabulary, rank 1 no rows
}


def reference_inputs(hidden, weight, bias):
    g = torch.Generator().manual_seed(11)
    noise = [torch.randn(x.shape, generator=g, dtype=torch.float64).to(x.dtype) for x in (hidden, weight, bias)]
    return hidden + 0.3 * noise[0], weight + 0.3 * noise[1], noise[2]


def amax(x) -> float:
    return float(x.abs().max()) if x.numel() else 0.0


def err(a, b) -> float:
    return amax(a.double() - b.double())


def compare(case: str, rank: int, world: int, group) -> dict:
    from una_hpc.parallel import reference_seq_logps
    from una_hpc.parallel.vocab_parallel_kernel import kernel_vocab_parallel_seq_logps

    with_head, ref_mode = CASES[case]
    hidden, weight, labels, seq_index, upstream, bias = problem(torch.float32)
    ref_hidden, ref_weight, ref_bias = reference_inputs(hidden, weight, bias)
    lo, hi = ((0, V), (V, V))[rank] if case == "empty_shard" else bounds(world)[rank]
    kw = HEAD if with_head else {}
    h = hidden.clone().requires_grad_(True)
    w = weight[lo:hi].clone().requires_grad_(True)
    b = bias[lo:hi].clone().requires_grad_(True) if with_head else None
    ref_kw = {
        "own": dict(ref_hidden=ref_hidden, ref_weight_shard=ref_weight[lo:hi], ref_bias_shard=ref_bias[lo:hi]),
        "shared": dict(ref_hidden=ref_hidden, ref_weight_shard=w),
        "self": dict(ref_hidden=h, ref_weight_shard=w),
        None: {},
    }[ref_mode]
    logps, ref = kernel_vocab_parallel_seq_logps(h, w, lo, labels, seq_index, S, group, bias_shard=b, **ref_kw, **kw)
    (logps.double() * upstream).sum().backward()

    leaves = [x.double().requires_grad_(True) for x in ([hidden, weight] + ([bias] if with_head else []))]
    rb = leaves[2] if with_head else None
    want_kw = {
        "own": dict(ref_hidden=ref_hidden.double(), ref_weight=ref_weight.double(), ref_bias=ref_bias.double()),
        "shared": dict(ref_hidden=ref_hidden.double()),
        "self": dict(ref_hidden=hidden.double()),
        None: {},
    }[ref_mode]
    want, want_ref = reference_seq_logps(leaves[0], leaves[1], labels, seq_index, S, bias=rb, **want_kw, **kw)
    (want * upstream).sum().backward()
    out = {
        "logps": err(logps, want),
        "logps_scale": amax(want),
        "grad_hidden": err(h.grad, leaves[0].grad),
        "grad_hidden_scale": amax(leaves[0].grad),
        "grad_weight": err(w.grad, leaves[1].grad[lo:hi]),
        "grad_weight_scale": amax(leaves[1].grad[lo:hi]),
        "ignored_rows_grad": amax(h.grad[labels == -100]),
        "rows": hi - lo,
        "empty_seq": float(logps[S - 1]),
        "ref_is_none": ref is None,
    }
    if with_head:
        out["grad_bias"] = err(b.grad, rb.grad[lo:hi])
        out["grad_bias_scale"] = amax(rb.grad[lo:hi])
    if ref is not None:
        out["ref_logps"] = err(ref, want_ref)
        out["ref_requires_grad"] = ref.requires_grad
        out["ref_equals_policy"] = bool(torch.equal(ref, logps))
    return out


def engine_dispatch(rank: int, world: int, group) -> dict:
    """TrainEngine._seq_logps on a stand-in with the attributes it reads: which path each backend setting takes."""
    from una_hpc.models.output_head import OutputHead
    from una_hpc.parallel.engine import TrainEngine

    hidden, weight, labels, seq_index, _, bias = problem(torch.float32)
    ref_hidden = reference_inputs(hidden, weight, bias)[0]
    lo, hi = bounds(world)[rank]
    w = weight[lo:hi].clone().requires_grad_(True)
    w.tensor_model_parallel = True

    class Engine:
        tp_size, tp_group = world, group

        def _vocab_start(self, shard):
            return lo

    engine = Engine()
    out = {}
    for backend in ("triton", "auto"):
        engine.tp_logps_backend = backend
        head = OutputHead(w, bias[lo:hi], **HEAD)
        logps, ref = TrainEngine._seq_logps(engine, head, hidden, labels, seq_index, S, ref_hidden, None, None, -100)
        out[backend] = {"fn": type(logps.grad_fn).__name__, "logps": logps.tolist(), "ref": ref.tolist()}
    return out


def rank_main(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    results = {case: compare(case, rank, world, dist.group.WORLD) for case in CASES}
    results["engine"] = engine_dispatch(rank, world, dist.group.WORLD)
    Path(out, f"rank{rank}.json").write_text(json.dumps(results))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_kernel_vocab_parallel_equals_unsharded(tmp_path, monkeypatch):
    # The ranks run on CPU under the interpreter: spawned processes read the flag from the environment they start
    # with, before anything imports triton.
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    world = 2
    mp.spawn(rank_main, args=(world, free_port(), str(tmp_path)), nprocs=world, join=True)
    runs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]
    for rank, results in enumerate(runs):
        for case, (with_head, ref_mode) in CASES.items():
            r = results[case]
            # fp32 kernels (interpreter tanh ~1e-7 * cap) against float64: a few fp32 ulps of each quantity's scale
            assert r["logps"] <= 2e-6 * r["logps_scale"], (rank, case, r)
            assert r["grad_hidden"] <= 2e-6 * r["grad_hidden_scale"], (rank, case, r)
            assert r["grad_weight"] <= 2e-6 * r["grad_weight_scale"], (rank, case, r)
            assert r["ignored_rows_grad"] == 0.0 and r["empty_seq"] == 0.0, (rank, case, r)
            assert (r["grad_weight_scale"] > 0) == (r["rows"] > 0), (rank, case, r)
            if with_head:
                assert r["grad_bias"] <= 2e-6 * r["grad_bias_scale"], (rank, case, r)
                assert (r["grad_bias_scale"] > 0) == (r["rows"] > 0), (rank, case, r)
            assert r["ref_is_none"] == (ref_mode is None), (rank, case, r)
            if ref_mode is not None:
                assert r["ref_logps"] <= 2e-6 * r["logps_scale"], (rank, case, r)
                assert not r["ref_requires_grad"]
                assert r["ref_equals_policy"] == (ref_mode == "self"), (rank, case, r)  # r = 0 exactly for self
        engine = results["engine"]
        assert "KernelVocabParallel" in engine["triton"]["fn"], engine
        assert "KernelVocabParallel" not in engine["auto"]["fn"], engine  # CPU default: the torch path, unchanged
        for key in ("logps", "ref"):
            torch.testing.assert_close(torch.tensor(engine["triton"][key]), torch.tensor(engine["auto"][key]))
    assert runs[0]["engine"] == runs[1]["engine"]  # every rank returns the same sums


def test_kernel_applies_rule():
    from una_hpc.parallel.vocab_parallel_kernel import kernel_applies

    h, w = torch.zeros(3, 4), torch.zeros(5, 4)
    assert not kernel_applies(h, w, "torch")
    assert not kernel_applies(h, w, "auto")  # CPU tensors: the torch path, as seq_logps(backend="auto")
    assert not kernel_applies(h.double(), w.double(), "auto")
    with pytest.raises(ValueError, match="backend must be one of"):
        kernel_applies(h, w, "cuda")
    with pytest.raises(ValueError):
        kernel_applies(h.double(), w.double(), "triton")
    if os.environ.get("TRITON_INTERPRET") == "1":
        assert kernel_applies(h, w, "triton")
        assert kernel_applies(h.bfloat16(), w, "triton")  # 16-bit hidden with an fp32 master weight
        with pytest.raises(ValueError, match="no kernel operand pair"):
            kernel_applies(h, w.bfloat16(), "triton")
