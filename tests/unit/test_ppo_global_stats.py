"""PPO's batch statistics over data-parallel ranks: whitening with `reduce` over two halves equals whitening of the
whole batch, so advantages and shaped scores do not depend on the rank count.

    .venv/bin/python -m pytest tests/unit/test_ppo_global_stats.py -q

Two threads stand in for two ranks; their `reduce` is an all-reduce SUM through a barrier (the trainer passes
TrainEngine.all_reduce_dp).
"""

from __future__ import annotations

import threading

import torch

from una_hpc.losses.ppo import shape_scores, whiten


class ThreadAllReduce:
    def __init__(self, n: int) -> None:
        self.barrier, self.slots, self.n = threading.Barrier(n), {}, n

    def reducer(self, rank: int):
        def reduce(t: torch.Tensor) -> torch.Tensor:
            self.slots[rank] = t.clone()
            self.barrier.wait()
            out = sum(self.slots[r] for r in range(self.n))
            self.barrier.wait()  # everyone read before the next call overwrites
            return out

        return reduce


def on_two_ranks(fn, parts):
    comm, out = ThreadAllReduce(2), [None, None]

    def work(rank):
        out[rank] = fn(parts[rank], comm.reducer(rank))

    threads = [threading.Thread(target=work, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_global_whitening_equals_whole_batch():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=gen) * 3 + 1
    mask = (torch.rand(6, 5, generator=gen) > 0.3).float()
    whole = whiten(x, mask)
    halves = on_two_ranks(lambda p, r: whiten(p[0], p[1], reduce=r), [(x[:3], mask[:3]), (x[3:], mask[3:])])
    torch.testing.assert_close(torch.cat(halves), whole, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(torch.cat([whiten(x[:3], mask[:3]), whiten(x[3:], mask[3:])]), whole)


def test_global_score_whitening_equals_whole_batch():
    s = torch.tensor([3.0, -1.0, 0.5, 2.0, 7.0, -4.0])
    whole = shape_scores(s, whiten_scores=True, clip=1.5)
    halves = on_two_ranks(lambda p, r: shape_scores(p, whiten_scores=True, clip=1.5, reduce=r), [s[:3], s[3:]])
    torch.testing.assert_close(torch.cat(halves), whole, rtol=1e-6, atol=1e-6)
