"""`make_engine`: the rollout engine named by `rollout.engine`, built from the config.

    engine = make_engine(cfg, policy_model, model_dir)   # vLLM: started on model_dir, then synced to the policy

Engines are looked up in ENGINE_BUILDERS (no branching on the name). When vLLM is requested but not installed, the
one-line VLLMNotInstalledError is raised, unless `rollout.allow_hf_fallback` is set: then the HF engine is built.
Only a missing vLLM falls back; an engine that fails to start (bad settings, bad model dir) is an error.

- vLLM: `max_model_len = trainer.max_length` (prompt + completion), `gpu_memory_utilization` (on CPU: the fraction
  of host memory reserved for vLLM), `seed = trainer.seed`, `dtype = trainer.dtype`, eager mode. The new engine is
  synced to the policy once, so a resumed or already-trained policy is sampled from its current weights (ZeRO-3:
  bucket by bucket, rollout.sync_bucket_mb). Its logs go to trainer.output_dir/vllm.log (vllm.rankN.log on other
  ranks) at rollout.engine_log_level; on CUDA the memory fraction is checked first (one line when it cannot fit).
- HF: EOS ids from the model's config and generation config plus the tokenizer in model_dir (when there is one);
  with rollout.stop, that tokenizer decodes for the stop strings (as vLLM's own, loaded from the same dir).

Tested by: .venv/bin/python -m pytest tests/unit/test_rollout_factory.py tests/integration/test_vllm_sync.py -q
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from torch import nn

from ..config import Config
from .base import RolloutEngine, VLLMNotInstalledError
from .hf_engine import HFEngine
from .vllm_engine import VLLMEngine, require_vllm
from .vllm_host import check_engine_memory
from .vllm_placement import rank_engine_args
from .weights import weights_for_sync

log = logging.getLogger(__name__)

EngineBuilder = Callable[[Config, nn.Module, Path], RolloutEngine]


def _ids(value: int | list[int] | None) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def special_token_ids(policy_model: nn.Module, model_dir: Path) -> tuple[list[int], int]:
    """(EOS ids, pad id) the policy stops on / pads with."""
    from .weights import unwrap_hf_model

    hf = unwrap_hf_model(policy_model)
    cfg, gen = hf.config, getattr(hf, "generation_config", None)
    eos = _ids(getattr(gen, "eos_token_id", None)) + _ids(getattr(cfg, "eos_token_id", None))
    pad = getattr(gen, "pad_token_id", None)
    pad = pad if pad is not None else getattr(cfg, "pad_token_id", None)
    if (model_dir / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(model_dir))
        eos += _ids(tok.eos_token_id)
        pad = pad if pad is not None else tok.pad_token_id
    eos = list(dict.fromkeys(eos))
    if not eos:
        raise ValueError(f"{model_dir}: the model defines no EOS token id (config, generation config or tokenizer)")
    return eos, pad if pad is not None else eos[0]


def engine_log_file(cfg: Config) -> Path | None:
    """OUTPUT_DIR/vllm.log on rank 0, vllm.rankN.log on the other ranks of a launched job; None (vLLM's own console
    logging) when the output dir does not exist: an engine outside a training run creates no run directory."""
    import os

    if not Path(cfg.trainer.output_dir).is_dir():
        return None
    rank = int(os.environ.get("RANK", "0"))
    return Path(cfg.trainer.output_dir) / ("vllm.log" if rank == 0 else f"vllm.rank{rank}.log")


def build_vllm_engine(cfg: Config, policy_model: nn.Module, model_dir: Path) -> RolloutEngine:
    require_vllm()
    check_engine_memory(cfg.rollout.gpu_memory_utilization)  # the trainer's models are already on the device
    engine = VLLMEngine(
        model_dir,
        max_model_len=cfg.trainer.max_length,
        gpu_memory_utilization=cfg.rollout.gpu_memory_utilization,
        seed=cfg.trainer.seed,
        dtype=cfg.trainer.dtype,
        log_file=engine_log_file(cfg),
        log_level=cfg.rollout.engine_log_level,
        sleep_level=cfg.rollout.sleep_level,
        engine_args=rank_engine_args(),  # on CUDA: this rank's own GPU, not GPU 0 (vllm_placement)
    )
    engine.sync_weights(weights_for_sync(policy_model, cfg.rollout.sync_bucket_mb))
    return engine


def build_hf_engine(cfg: Config, policy_model: nn.Module, model_dir: Path) -> RolloutEngine:
    eos, pad = special_token_ids(policy_model, model_dir)
    tokenizer = None
    if cfg.rollout.stop:  # matched on decoded text, with the tokenizer vLLM would load from the same dir
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    return HFEngine(
        policy_model, eos_token_ids=eos, pad_token_id=pad, max_length=cfg.trainer.max_length, tokenizer=tokenizer
    )


ENGINE_BUILDERS: dict[str, EngineBuilder] = {"vllm": build_vllm_engine, "hf": build_hf_engine}


def make_engine(cfg: Config, policy_model: nn.Module, model_dir: str | Path) -> RolloutEngine:
    """The engine `cfg.rollout.engine` names, sampling from `policy_model` (whose initial weights are model_dir)."""
    name = cfg.rollout.engine
    if name not in ENGINE_BUILDERS:
        raise ValueError(f"rollout.engine {name!r} is not one of {', '.join(ENGINE_BUILDERS)}")
    try:
        return ENGINE_BUILDERS[name](cfg, policy_model, Path(model_dir))
    except VLLMNotInstalledError:
        if not cfg.rollout.allow_hf_fallback:
            raise
        log.warning("vLLM is not installed; rollout.allow_hf_fallback is set: generating with HF generate")
        return ENGINE_BUILDERS["hf"](cfg, policy_model, Path(model_dir))
