"""Scale-out: the TrainEngine the trainer is written against (single process or DeepSpeed ZeRO-0..3 / AutoTP),
vocabulary-parallel log-probabilities, checkpoint consolidation to HF dirs. deepspeed is imported lazily.

    from una_hpc.parallel import build_engine
    engine = build_engine(model, cfg)     # factory.py; engine.py has the loop and the loss-scaling contract

Tested by: .venv/bin/python -m pytest tests/distributed -q      (docs/scaling.md)
"""

from .consolidate import consolidate_to_hf, merge_lora, state_dict_from_checkpoint
from .distributed import DistInfo, init_distributed, use_deepspeed
from .ds_config import (
    apply_clipping,
    apply_optimizer,
    apply_precision,
    apply_tp,
    apply_zero,
    build_ds_config,
    zero_config,
)
from .engine import TrainEngine
from .factory import build_engine, select_backend
from .logps import reference_seq_logps
from .schedule import lr_lambda, param_groups
from .vocab_parallel import vocab_parallel_seq_logps, vocab_parallel_token_logps

__all__ = [
    "TrainEngine",
    "build_engine",
    "select_backend",
    "init_distributed",
    "DistInfo",
    "use_deepspeed",
    "build_ds_config",
    "zero_config",
    "apply_zero",
    "apply_tp",
    "apply_precision",
    "apply_optimizer",
    "apply_clipping",
    "lr_lambda",
    "param_groups",
    "vocab_parallel_seq_logps",
    "vocab_parallel_token_logps",
    "reference_seq_logps",
    "consolidate_to_hf",
    "merge_lora",
    "state_dict_from_checkpoint",
]
