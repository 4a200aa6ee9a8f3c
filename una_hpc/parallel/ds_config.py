"""The DeepSpeed config dict, built from the typed Config by small composable functions (no deepspeed import).

    ds = build_ds_config(cfg, hidden_size)   # = base_config -> apply_zero -> apply_tp -> apply_precision
                                             #   -> apply_optimizer -> apply_clipping
    deepspeed.initialize(model=..., config=ds, lr_scheduler=<LambdaLR factory from schedule.py>)

Gradient accumulation is the trainer's (micro-batch count may vary per step), so DeepSpeed sees micro-batch 1 and
gradient_accumulation_steps 1:
- ZeRO 1-3: `managed_gradient_accumulation: false` (DeepSpeed 0.19): backward only accumulates and reduce-scatters,
  step() is the accumulation boundary.
- ZeRO 0: every backward is a boundary and all-reduces its own gradient contribution; by linearity the sum over
  micro-batches is the same, and the grads are complete when the engine measures their norm before step().
Tested by: tests/distributed/test_deepspeed_engine.py
"""

from __future__ import annotations

import torch

from ..config import Config


def base_config() -> dict:
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def bucket_sizes(stage: int, hidden_size: int | None) -> dict:
    """Communication buckets sized to the model (HF's "auto" rule): DeepSpeed's 5e8-element defaults would hold
    2 GB of fp32 buffers per rank whatever the model size (measured on a 5M-parameter model, benchmarks/)."""
    if not hidden_size or stage == 0:
        return {}
    h2 = hidden_size * hidden_size
    sizes = {"reduce_bucket_size": h2, "allgather_bucket_size": h2}
    if stage == 3:
        sizes = {
            "reduce_bucket_size": h2,
            "stage3_prefetch_bucket_size": int(0.9 * h2),
            "stage3_param_persistence_threshold": 10 * hidden_size,
        }
    return sizes


def zero_config(cfg: Config, hidden_size: int | None = None) -> dict:
    """The zero_optimization section: stage, buckets, offload, ZeRO-3 export of full weights."""
    p = cfg.parallel
    if p.zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"parallel.zero_stage must be 0-3, got {p.zero_stage}")
    if p.offload_param and p.zero_stage != 3:
        raise ValueError("parallel.offload_param needs parallel.zero_stage=3")
    if p.offload_optimizer and p.zero_stage == 0:
        raise ValueError("parallel.offload_optimizer needs parallel.zero_stage >= 1")
    if p.zero_stage == 0 and cfg.trainer.dtype == "bfloat16":
        # Measured on DeepSpeed 0.19.8: its stage-0 BF16_Optimizer does not reproduce the fp32-master update
        # (the curve leaves the single-process one from step 2, with and without AutoTP); ZeRO-1/2/3 bf16 do.
        raise ValueError(
            "trainer.dtype=bfloat16 under DeepSpeed needs parallel.zero_stage >= 1 "
            "(ZeRO-1 costs no more communication than stage 0)"
        )
    z: dict = {"stage": p.zero_stage, **bucket_sizes(p.zero_stage, hidden_size)}
    if p.zero_stage == 1:
        z["overlap_comm"] = False  # unmanaged accumulation allows overlap_comm only with stage 2/3
    if p.zero_stage == 3:
        z["stage3_gather_16bit_weights_on_model_save"] = True
    pin = torch.cuda.is_available()
    if p.offload_optimizer:
        z["offload_optimizer"] = {"device": "cpu", "pin_memory": pin}
    if p.offload_param:
        z["offload_param"] = {"device": "cpu", "pin_memory": pin}
    return z


def apply_zero(ds: dict, cfg: Config, hidden_size: int | None = None) -> dict:
    ds["zero_optimization"] = zero_config(cfg, hidden_size)
    ds["managed_gradient_accumulation"] = cfg.parallel.zero_stage == 0
    return ds


def apply_tp(ds: dict, cfg: Config) -> dict:
    """AutoTP: DeepSpeed shards the linear layers (and lm_head by vocabulary rows) over tp_size ranks."""
    tp = cfg.parallel.tp_size
    if tp < 1:
        raise ValueError(f"parallel.tp_size must be >= 1, got {tp}")
    if tp > 1:
        ds["tensor_parallel"] = {"autotp_size": tp}
    return ds


def apply_precision(ds: dict, cfg: Config) -> dict:
    """trainer.dtype=bfloat16: bf16 weights and activations, fp32 master weights in the optimizer."""
    if cfg.trainer.dtype == "bfloat16":
        ds["bf16"] = {"enabled": True}
    return ds


def apply_optimizer(ds: dict, cfg: Config) -> dict:
    """AdamW with the optim.* fields; torch's implementation (no compiled op), except DeepSpeedCPUAdam for offload."""
    o = cfg.optim
    params = {"lr": o.lr, "betas": [o.adam_beta1, o.adam_beta2], "eps": o.adam_eps, "weight_decay": o.weight_decay}
    if not cfg.parallel.offload_optimizer:
        params["torch_adam"] = True
    ds["optimizer"] = {"type": "AdamW", "params": params}
    return ds


def apply_clipping(ds: dict, cfg: Config) -> dict:
    ds["gradient_clipping"] = max(cfg.optim.max_grad_norm, 0.0)
    return ds


def build_ds_config(cfg: Config, hidden_size: int | None = None) -> dict:
    """hidden_size (the model's) sizes the ZeRO buckets; None keeps DeepSpeed's defaults."""
    ds = apply_zero(base_config(), cfg, hidden_size)
    for apply in (apply_tp, apply_precision, apply_optimizer, apply_clipping):
        ds = apply(ds, cfg)
    return ds
