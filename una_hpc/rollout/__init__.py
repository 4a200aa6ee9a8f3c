"""Rollout generation for online UNA / PPO: engines (vLLM colocated, HF fallback), weight sync, reward models.

Importing this package never imports vLLM; a VLLMEngine imports it when created.
"""

from .base import (
    EngineStartError,
    Rollout,
    RolloutEngine,
    SamplingSettings,
    SyncStats,
    VLLMNotInstalledError,
    WeightSyncError,
)
from .consistency import max_logprob_drift, rollout_logps
from .factory import ENGINE_BUILDERS, make_engine
from .hf_engine import HFEngine
from .reward import RewardModel
from .reward_train import ScoredText, train_reward_model, train_rm_from_config
from .vllm_engine import VLLM_HINT, VLLMEngine, module_available, require_vllm
from .weights import policy_weights_for_sync

__all__ = [
    "EngineStartError",
    "Rollout",
    "RolloutEngine",
    "SamplingSettings",
    "SyncStats",
    "VLLMNotInstalledError",
    "WeightSyncError",
    "max_logprob_drift",
    "rollout_logps",
    "ENGINE_BUILDERS",
    "make_engine",
    "HFEngine",
    "RewardModel",
    "ScoredText",
    "train_reward_model",
    "train_rm_from_config",
    "VLLM_HINT",
    "VLLMEngine",
    "module_available",
    "require_vllm",
    "policy_weights_for_sync",
]
