"""reduce_row: a step's metrics row over data-parallel ranks (loss and tokens summed, grad_norm and lr kept, the
rest averaged), against a stand-in for the collective.

    .venv/bin/python -m pytest tests/unit/test_trainer_step.py -q

The stand-in sums given per-rank dicts; the real all-reduce behind `sum_over_dp` runs in the 2-process gloo tests
of tests/distributed (una_worker.py).
"""

from __future__ import annotations

import pytest

from una_hpc.trainer.step import reduce_row


class FakeDPEngine:
    """`dp_world_size` and `sum_over_dp` of one rank, the other ranks' contributions given up front."""

    def __init__(self, others: list[dict]) -> None:
        self.others = others
        self.dp_world_size = len(others) + 1
        self.calls: list[dict] = []

    def sum_over_dp(self, values: dict[str, float]) -> dict[str, float]:
        self.calls.append(dict(values))
        for other in self.others:
            assert other.keys() == values.keys()  # every rank passes the same keys to the collective
        return {k: v + sum(o[k] for o in self.others) for k, v in values.items()}


# grad_norm and lr are the same on every rank of a real run (already global); they differ here so that keeping
# this rank's value and averaging are told apart.
RANKS = [
    {
        "loss": 0.5,
        "tokens": 100,
        "grad_norm": 2.0,
        "lr": 1e-3,
        "reward_mean": 0.1,
        "pair_accuracy": 0.5,
        "loss_score": 0.25,
        "time_train_s": 3.0,
        "peak_memory_mb": 700.0,
    },
    {
        "loss": 1.5,
        "tokens": 60,
        "grad_norm": 4.0,
        "lr": 2e-3,
        "reward_mean": 0.4,
        "pair_accuracy": 1.0,
        "loss_score": 0.75,
        "time_train_s": 5.0,
        "peak_memory_mb": 900.0,
    },
    {
        "loss": 4.0,
        "tokens": 20,
        "grad_norm": 6.0,
        "lr": 3e-3,
        "reward_mean": -0.2,
        "pair_accuracy": 0.0,
        "loss_score": 2.0,
        "time_train_s": 1.0,
        "peak_memory_mb": 500.0,
    },
]


def _as_passed(row: dict) -> dict:
    return {k: float(v) for k, v in row.items()}


@pytest.mark.parametrize("world", [2, 3])
def test_reduce_row_sums_loss_and_tokens_keeps_global_values_averages_the_rest(world):
    rows = RANKS[:world]
    for rank, mine in enumerate(rows):
        engine = FakeDPEngine([_as_passed(r) for i, r in enumerate(rows) if i != rank])
        out = reduce_row({**mine, "run": "name"}, engine)
        assert len(engine.calls) == 1 and engine.calls[0] == _as_passed(mine)  # non-numbers never reach it
        assert out["loss"] == pytest.approx(sum(r["loss"] for r in rows))
        assert out["tokens"] == sum(r["tokens"] for r in rows)
        assert out["grad_norm"] == mine["grad_norm"] and out["lr"] == mine["lr"]
        for k in ("reward_mean", "pair_accuracy", "loss_score", "time_train_s", "peak_memory_mb"):
            assert out[k] == pytest.approx(sum(r[k] for r in rows) / world), k
        assert out["run"] == "name" and out.keys() == {*mine, "run"}
    # the hand-computed two-rank case
    out = reduce_row(dict(RANKS[0]), FakeDPEngine([_as_passed(RANKS[1])]))
    assert out == pytest.approx(
        {
            "loss": 2.0,
            "tokens": 160,
            "grad_norm": 2.0,
            "lr": 1e-3,
            "reward_mean": 0.25,
            "pair_accuracy": 0.75,
            "loss_score": 0.5,
            "time_train_s": 4.0,
            "peak_memory_mb": 800.0,
        }
    )


def test_reduce_row_on_one_rank_is_the_row_itself():
    class OneRank:
        dp_world_size = 1

        def sum_over_dp(self, values):
            raise AssertionError("a single rank needs no collective")

    row = dict(RANKS[2])
    assert reduce_row(row, OneRank()) == RANKS[2]
