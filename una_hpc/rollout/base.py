"""The rollout interface shared by every generation engine (vLLM colocated, HF generate fallback).

    engine = make_engine(cfg, policy_model, model_dir)          # una_hpc.rollout.factory
    engine.sync_weights(policy_weights_for_sync(policy_model))  # before each rollout batch
    rollouts = engine.generate(prompt_ids, n=4, params=SamplingSettings.from_config(cfg.rollout, seed=step))
    engine.close()

Rollouts come back grouped by prompt (prompt 0's n samples, then prompt 1's, ...). `logprobs[t]` is the policy's
log-probability of `completion_ids[t]` under the *raw* logits (temperature 1, no top-p): the same quantity the
trainer's `seq_logps` computes, so the two can be compared token for token (vLLM's `logprobs_mode="raw_logprobs"`).

Tested by: .venv/bin/python -m pytest tests/unit/test_rollout_hf.py tests/integration/test_vllm_sync.py -q
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from torch import Tensor

from ..config import RolloutConfig


class EngineStartError(RuntimeError):
    """A generation engine could not be created (one line naming the engine, the model dir and the cause)."""


class VLLMNotInstalledError(ImportError):
    """vLLM is requested but cannot be imported."""


class WeightSyncError(RuntimeError):
    """Pushing the policy's weights into the engine failed; the engine must be recreated."""


@dataclass(frozen=True)
class SamplingSettings:
    """How to sample. Engines read only these fields; nothing else about sampling is configurable per call."""

    max_new_tokens: int = 48
    """Completion token limit (finish reason "length" when reached)."""
    temperature: float = 1.0
    """Sampling temperature; 0 = greedy."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    top_k: int = 0
    """Sample among the k most likely tokens only; 0 or -1 = off."""
    stop: tuple[str, ...] = ()
    """Stop strings: the completion is cut after the token that completes the first one and counts as finished
    (finish reason "stop"); the rule both engines apply is una_hpc/rollout/stops.py's. Engines decode with the
    policy's tokenizer for this."""
    seed: int | None = None
    """Base seed: prompt i's samples use seeds seed + i*n + j (j < n), so every sample has its own stream and a
    call is reproducible. None: the engine's own random state (reproducible only as a whole run)."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < -1:
            raise ValueError(f"top_k must be >= 1, or 0 / -1 for off, got {self.top_k}")
        if isinstance(self.stop, str) or any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop must be a sequence of non-empty strings, got {self.stop!r}")
        object.__setattr__(self, "stop", tuple(self.stop))  # frozen and hashable, whatever sequence was given

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def k(self) -> int:
        """top_k as the engines take it: 0 = off."""
        return max(self.top_k, 0)

    @classmethod
    def from_config(cls, cfg: RolloutConfig, seed: int | None = None) -> SamplingSettings:
        return cls(
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            stop=tuple(cfg.stop),
            seed=seed,
        )


@dataclass
class Rollout:
    """One sampled completion of one prompt."""

    prompt_index: int
    """Index of the prompt in the `prompt_ids` list given to `generate`."""
    sample_index: int
    """Which of the prompt's n samples (0..n-1)."""
    prompt_ids: list[int]
    """The prompt's token ids, as given."""
    completion_ids: list[int]
    """Sampled token ids; ends with the EOS token, or the token completing a stop string, when finish_reason is
    "stop"."""
    logprobs: list[float]
    """log pi(completion_ids[t] | prefix) under the raw logits, one per completion token."""
    finish_reason: str
    """"stop" (an EOS token was sampled, or a stop string completed) or "length" (max_new_tokens or the engine's
    max length reached: a truncated completion, see rollout.truncated)."""

    def __post_init__(self) -> None:
        if len(self.logprobs) != len(self.completion_ids):
            raise ValueError(
                f"rollout {self.prompt_index}/{self.sample_index}: {len(self.logprobs)} logprobs "
                f"for {len(self.completion_ids)} completion tokens"
            )

    @property
    def logprob_sum(self) -> float:
        """The completion's sequence log-probability (what the trainer's seq_logps returns for it)."""
        return float(sum(self.logprobs))


@dataclass
class SyncStats:
    """What the last `sync_weights` moved and how long it took."""

    tensors: int = 0
    bytes: int = 0
    seconds: float = 0.0
    history: list[float] = field(default_factory=list)
    """Seconds of every sync so far (for the run's metrics)."""


@runtime_checkable
class RolloutEngine(Protocol):
    """A generation engine the online trainer samples from."""

    name: str

    def generate(self, prompt_ids: list[list[int]], n: int, params: SamplingSettings) -> list[Rollout]:
        """n samples per prompt, grouped by prompt in input order."""
        ...

    def sync_weights(self, named_tensors: Iterable[tuple[str, Tensor]]) -> None:
        """Make the engine sample from these weights (HF state_dict names, plain model)."""
        ...

    def close(self) -> None:
        """Release the engine's memory; the engine is unusable afterwards."""
        ...


def check_prompts(prompt_ids: list[list[int]], n: int, max_len: int | None = None) -> None:
    """One-line ValueError for inputs no engine can serve."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    for i, ids in enumerate(prompt_ids):
        if not ids:
            raise ValueError(f"prompt {i} is empty")
        if max_len is not None and len(ids) >= max_len:
            raise ValueError(
                f"prompt {i} has {len(ids)} tokens, the engine's max length is {max_len} "
                f"(raise trainer.max_length or shorten prompts)"
            )
