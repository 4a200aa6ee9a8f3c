"""trainer.step_hook functions that inject faults for real (tests/integration/test_faults.py, test_faults_ds.py).

    trainer.step_hook=fault_hooks:nan_at_step_2        # tests/ on PYTHONPATH

A hook runs on every rank as fn(step, rank, batches) before the step's forward. A NaN reference logp (offline and
online UNA) or a NaN reward (PPO, whose batch targets carry the rewards) makes that micro-batch's loss non-finite.
"""

from __future__ import annotations

import os
import time

import torch


def _poison(batch) -> None:
    """UNA (offline cached or online in-kernel reference): a NaN reference logp for every sequence."""
    batch.ref_logps = torch.full((batch.num_seqs,), float("nan"), device=batch.input_ids.device)


def _nan_rank() -> int:
    return int(os.environ.get("UNA_TEST_NAN_RANK", "0"))


def nan_at_step_2(step: int, rank: int, batches: list) -> None:
    """The first micro-batch of step index 2 (the third step) on rank UNA_TEST_NAN_RANK gets a non-finite loss."""
    if step == 2 and rank == _nan_rank():
        _poison(batches[0])


def nan_from_step_2(step: int, rank: int, batches: list) -> None:
    """Every step from index 2 on is non-finite (trips trainer.max_bad_steps)."""
    if step >= 2 and rank == _nan_rank():
        _poison(batches[0])


def nan_reward_at_step_2(step: int, rank: int, batches: list) -> None:
    """PPO: a NaN reward for the first rollout of step index 2 (its batch targets carry the rewards)."""
    if step == 2 and rank == _nan_rank():
        batches[0].targets.target[0] = float("nan")


def slow(step: int, rank: int, batches: list) -> None:
    """Each step takes at least UNA_TEST_STEP_S seconds: room to deliver a signal mid-run."""
    time.sleep(float(os.environ.get("UNA_TEST_STEP_S", "0.5")))


def slow_nan_at_step_2(step: int, rank: int, batches: list) -> None:
    """slow and nan_at_step_2 together (the 2-rank preemption test also skips a step)."""
    slow(step, rank, batches)
    nan_at_step_2(step, rank, batches)


def slow_nan_reward_at_step_2(step: int, rank: int, batches: list) -> None:
    """slow and nan_reward_at_step_2 together (PPO's preemption test also skips a step)."""
    slow(step, rank, batches)
    nan_reward_at_step_2(step, rank, batches)
