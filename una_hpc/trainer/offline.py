"""The offline UNA loop: every loss head in the registry, mixed batches included, single process or DeepSpeed.

    una-hpc train configs/quickstart.yaml trainer.max_steps=50
    deepspeed --num_gpus 2 -m una_hpc.train configs/parallel/zero2.yaml

Order of work: resolve model and data -> validate all data and eval.every's prompts (exit before writing anything)
-> load the policy -> reference logps (cache) -> engine (plain torch or DeepSpeed, same interface) -> resume ->
steps (every eval.every steps, an evaluation of the live policy joins the step's metrics row; see eval_live) ->
final export.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..config import Config
from ..data.packing import collate
from ..losses import get_head
from .eval_live import LiveEval
from .inputs import check_batching, load_training_data
from .ref_logps import reference_logps
from .run import open_run
from .sampler import StepSampler, micro_batches, shard_for_rank
from .step import reduce_row, shared_prompts, train_step


def global_counts(data, indices: list[int]) -> dict[str, int]:
    return dict(Counter(data[i].feedback for i in indices))


def train(cfg: Config) -> Path | None:
    """Run offline training; returns the final HF model dir (None when a preemption signal stopped it)."""
    run = open_run(cfg)
    check_batching(cfg, run.dist.world_size // max(cfg.parallel.tp_size, 1))
    data = load_training_data(cfg, run.inputs, run.tokenizer)  # DataError before anything is written
    live_eval = LiveEval.open(run)  # None unless eval.every > 0 on rank 0
    head = get_head(cfg.loss.name)
    # KTO's mismatched KL sequences depend on the micro-batch, so their reference runs in the kernel's pass.
    use_cache = cfg.data.ref_cache and not head.kl_sequences
    pair = run.load_policy(need_ref=not use_cache)
    pad_id = run.tokenizer.pad_token_id
    share = shared_prompts(cfg, pair, loud=run.dist.rank == 0)
    ref_cache = (
        reference_logps(pair, data, cfg, run.inputs.model_path, run.dist, run.device, pad_id, share)
        if use_cache
        else None
    )
    start = run.start()
    engine = run.engine

    sampler = StepSampler(len(data), cfg.trainer.batch_size, cfg.trainer.seed)
    for step in range(start, cfg.trainer.max_steps):
        global_batch = sampler.global_batch(step)
        batches = []
        for mb in micro_batches(
            shard_for_rank(global_batch, engine.dp_rank, engine.dp_world_size), cfg.trainer.micro_batch_size
        ):
            batch = collate(
                [data[i] for i in mb],
                pad_id,
                row_length=cfg.data.row_length(cfg.trainer.max_length),
                kto_kl=head.kl_sequences,
                max_length=cfg.trainer.max_length,
                share_prompt=share,
            )
            if ref_cache is not None:
                batch.ref_logps = ref_cache.for_batch(batch)
            batches.append(batch.to(run.device))
        run.hook(step, batches)
        row = reduce_row(train_step(engine, pair, head, batches, global_counts(data, global_batch), cfg), engine)
        tokens = int(row.pop("tokens"))
        if live_eval is not None and (step + 1) % cfg.eval.every == 0:
            row.update(live_eval.metrics())
        if run.end_step(step + 1, {**row, "epoch": sampler.epoch_of(step + 1)}, tokens):
            break  # preempted: finish() saves this step and exits 0
    return run.finish()
