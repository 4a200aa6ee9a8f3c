"""After a weight sync: does the engine still sample from the trainer's weights? (rollout.check_sync_every)

    drift = probe_sync(rollout_engine, train_engine, prompt_ids, tolerance=1e-3)   # raises SyncDriftError

The engine greedily continues one prompt for a few tokens and returns their log-probabilities; the trainer computes
the same tokens' log-probabilities with its own forward (rollout_logps: the fused kernel on the policy as trained,
LoRA active, ZeRO-3 gathered by its module hooks and the lm_head gathered here). After a correct sync the two
agree to float rounding (fp32: ~1e-6 per token); a stale engine, a wrong name mapping or an unmerged adapter is off
by whole nats. Collective under ZeRO-3: every rank probes at the same step.

Tested by: .venv/bin/python -m pytest tests/integration/test_vllm_sync.py tests/distributed/test_online_dp.py -q
"""

from __future__ import annotations

from .base import SamplingSettings, WeightSyncError
from .consistency import rollout_logps

PROBE_TOKENS = 8


class SyncDriftError(WeightSyncError):
    """The engine's log-probs left the trainer's after a sync (one line: step, drift, tolerance)."""


def probe_drift(rollout_engine, train_engine, prompt_ids: list[int], max_new_tokens: int = PROBE_TOKENS) -> float:
    """Largest |engine - trainer| log-prob per generated token (nats) on a greedy continuation of `prompt_ids`."""
    params = SamplingSettings(max_new_tokens=max_new_tokens, temperature=0.0, seed=0)
    rollouts = rollout_engine.generate([list(prompt_ids)], 1, params)
    with train_engine.gathered_params([train_engine.output_weight()]):
        trainer = rollout_logps(train_engine.module, rollouts)
    return max(
        abs(r.logprob_sum - float(t)) / max(len(r.completion_ids), 1) for r, t in zip(rollouts, trainer.tolist())
    )


def probe_sync(rollout_engine, train_engine, prompt_ids: list[int], tolerance: float, step: int = 0) -> float:
    """probe_drift, raising SyncDriftError when it exceeds `tolerance`; returns the drift."""
    drift = probe_drift(rollout_engine, train_engine, prompt_ids)
    if drift > tolerance:
        raise SyncDriftError(
            f"step {step}: after the weight sync the {rollout_engine.name} engine's log-probs differ from the "
            f"trainer's by {drift:.3g} nats per token (rollout.check_sync_tolerance={tolerance:g}): the engine "
            "samples from other weights than the trainer's"
        )
    return drift
