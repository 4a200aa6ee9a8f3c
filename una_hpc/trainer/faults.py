"""What a long run meets besides bugs: non-finite steps and preemption signals (docs/faults.md).

    guard = NonFiniteGuard(cfg.trainer.max_bad_steps)
    guard.observe(step, row)            # row["skipped"] from engine.step(); raises NonFiniteError after too many
    stop = Preemption.install()         # SIGTERM / SIGUSR1 set a flag; a second one exits at once
    if stop.requested(engine): ...      # agreed over all ranks at the step boundary (all-reduce MAX)

The engines skip a non-finite step themselves (una_hpc/parallel/engine.py, "Non-finite steps"): this module only
counts, reports and stops. Tested by: .venv/bin/python -m pytest tests/integration/test_faults.py -q
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading

import torch
import torch.distributed as dist

PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class NonFiniteError(ValueError):
    """Too many non-finite steps in a row (one line; the CLI prints it and exits 1)."""


class NonFiniteGuard:
    """Counts skipped (non-finite) steps; all ranks see the same row values, so all stop at the same step."""

    def __init__(self, max_bad_steps: int):
        self.max_bad_steps = max_bad_steps
        self.in_a_row = 0
        self.total = 0

    def observe(self, step: int, row: dict) -> bool:
        """Record step `step` (1-based); returns whether it was skipped. Adds `skipped_steps` (run total) to row."""
        bad = bool(row.get("skipped", 0)) or not math.isfinite(float(row.get("loss", 0.0)))
        self.in_a_row = self.in_a_row + 1 if bad else 0
        self.total += int(bad)
        row["skipped_steps"] = self.total
        return bad

    @property
    def tripped(self) -> bool:
        return self.max_bad_steps > 0 and self.in_a_row >= self.max_bad_steps

    def error(self, step: int, last_good) -> NonFiniteError:
        where = f"last good checkpoint: {last_good}" if last_good else "no checkpoint was written yet"
        return NonFiniteError(
            f"step {step}: {self.in_a_row} steps in a row had a non-finite loss or gradient norm and were "
            f"skipped (trainer.max_bad_steps={self.max_bad_steps}); stopping, {where}"
        )


class Preemption:
    """SIGTERM / SIGUSR1 (what schedulers send before a kill) ask the run to save and stop at the step boundary."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    @classmethod
    def install(cls) -> Preemption:
        p = cls()
        if threading.current_thread() is threading.main_thread():  # signal handlers live on the main thread only
            for sig in PREEMPT_SIGNALS:
                p._previous[sig] = signal.signal(sig, p._handle)
        return p

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            print(f"{name} again: exiting now without a checkpoint", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.received = signum
        print(f"{name} received: finishing this step, then saving a checkpoint", file=sys.stderr, flush=True)

    def requested(self, engine) -> bool:
        """Whether any rank received a signal; a collective when distributed (every rank calls it every step)."""
        return any_rank(self.received is not None, engine.device)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when `flag` is true on any rank; a collective when distributed (every rank must call it)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor([float(flag)], device=device)  # NCCL reduces device tensors only
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item()) > 0
    return flag
