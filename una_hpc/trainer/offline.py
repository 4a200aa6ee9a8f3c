"""The offline UNA loop: every loss head in the registry, mixed batches included, single process or DeepSpeed.

    una-hpc train configs/quickstart.yaml trainer.max_steps=50
    deepspeed --num_gpus 2 -m una_hpc.train configs/parallel/zero2.yaml

Order of work: resolve model and data -> validate all data (exit before writing anything) -> load the policy ->
reference logps (cache) -> engine (plain torch or DeepSpeed, same interface) -> resume -> steps -> final export.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from ..config import Config, save_config
from ..data.packing import collate
from ..losses import get_head
from ..models.policy import build_policy, load_tokenizer
from ..parallel import build_engine, init_distributed
from ..parallel.distributed import device_for
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .export import export_hf_model
from .inputs import load_training_data, resolve_inputs
from .metrics import MetricsLogger
from .ref_logps import reference_logps
from .sampler import StepSampler, micro_batches, shard_for_rank
from .step import train_step


def global_counts(data, indices: list[int]) -> dict[str, int]:
    return dict(Counter(data[i].feedback for i in indices))


def reduce_row(row: dict, engine) -> dict:
    """Sum the loss and tokens over data-parallel ranks, average the other metrics (logging only)."""
    if engine.dp_world_size == 1:
        return row
    summed = engine.sum_over_dp({k: float(v) for k, v in row.items() if isinstance(v, (int, float))})
    keep = {"loss", "tokens", "grad_norm", "lr"}  # grad_norm and lr are already global
    return {**row, **{k: (v if k in {"loss", "tokens"} else row[k] if k in keep else v / engine.dp_world_size)
                      for k, v in summed.items()}}


def train(cfg: Config) -> Path:
    """Run offline training; returns the final HF model dir."""
    dist = init_distributed(cfg)
    device = device_for(dist.local_rank)
    is_main = dist.rank == 0
    barrier = torch.distributed.barrier if dist.world_size > 1 else (lambda: None)
    torch.manual_seed(cfg.trainer.seed)
    inputs = resolve_inputs(cfg, is_main=is_main, barrier=barrier)
    tokenizer = load_tokenizer(inputs.model_path)
    data = load_training_data(cfg, inputs, tokenizer)  # DataError before anything is written
    head = get_head(cfg.loss.name)
    out = Path(cfg.trainer.output_dir)
    # KTO's mismatched KL sequences depend on the micro-batch, so their reference runs in the kernel's pass.
    use_cache = cfg.data.ref_cache and not head.kl_sequences
    pair = build_policy(cfg.model, inputs.model_path, device, need_ref=not use_cache)
    ref_cache = (reference_logps(pair, data, cfg, inputs.model_path, dist, device, tokenizer.pad_token_id)
                 if use_cache else None)
    engine = build_engine(pair.policy, cfg)

    start = 0
    ckpt = latest_checkpoint(out) if cfg.trainer.resume else None
    if ckpt is not None:
        start = load_checkpoint(engine, ckpt)["step"]
        if is_main:
            print(f"resumed from {ckpt} at step {start}")
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")

    sampler = StepSampler(len(data), cfg.trainer.batch_size, cfg.trainer.seed)
    logger = MetricsLogger(out, cfg.trainer.max_steps, start, enabled=is_main,
                           progress=cfg.trainer.progress, tensorboard=cfg.trainer.tensorboard)
    export = lambda d: export_hf_model(engine, pair, tokenizer, d)  # noqa: E731
    save = lambda step: save_checkpoint(  # noqa: E731
        engine, out, step, {"step": step, "examples_seen": step * cfg.trainer.batch_size}, export,
        cfg.trainer.keep_checkpoints)
    tokens, saved_at = 0, start
    for step in range(start, cfg.trainer.max_steps):
        global_batch = sampler.global_batch(step)
        mine = shard_for_rank(global_batch, engine.dp_rank, engine.dp_world_size)
        batches = []
        for mb in micro_batches(mine, cfg.trainer.micro_batch_size):
            batch = collate([data[i] for i in mb], tokenizer.pad_token_id, row_length=cfg.trainer.max_length,
                            kto_kl=head.kl_sequences, max_length=cfg.trainer.max_length)
            if ref_cache is not None:
                batch.ref_logps = ref_cache.for_batch(batch)
            batches.append(batch.to(device))
        row = reduce_row(train_step(engine, pair, head, batches, global_counts(data, global_batch), cfg), engine)
        tokens += int(row.pop("tokens"))
        if (step + 1) % cfg.trainer.log_every == 0 or step + 1 == cfg.trainer.max_steps:
            logger.log(step + 1, {**row, "epoch": sampler.epoch_of(step + 1)}, tokens)
            tokens = 0
        if cfg.trainer.save_every and (step + 1) % cfg.trainer.save_every == 0:
            save(step + 1)
            saved_at = step + 1
    logger.close()
    if saved_at != cfg.trainer.max_steps:
        save(cfg.trainer.max_steps)
    final = out / "final"
    export(final)
    return final
