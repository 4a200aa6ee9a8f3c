"""Online UNA (loss.name=una_online): sample -> reward model -> normalize to [0, 1] -> UNA MSE -> step -> weight sync.

    una-hpc train configs/online_una.yaml                      # vLLM colocated (rollout.engine=vllm)
    una-hpc train configs/online_una.yaml rollout.engine=hf    # HF generate on the policy itself

No value model, no GAE: each sampled response is one `score` example regressed with the offline step
(`train_step`, the same kernel pass for policy and reference), so checkpoints, resume, metrics and DeepSpeed are the
offline loop's. After every optimizer step the policy's weights (LoRA merged on the fly) are pushed into the engine.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..config import Config
from ..data.packing import collate
from ..data.tokenize import TokenizedExample
from ..losses import get_head, normalize_rewards
from ..rollout.factory import make_engine
from ..rollout.reward import RewardModel
from ..rollout.weights import policy_weights_for_sync
from .online_common import (PhaseTimer, check_online_config, gold_rewards, load_prompts, peak_memory_mb,
                            reward_model_path, sampling_for_step)
from .run import open_run
from .sampler import StepSampler, micro_batches, shard_for_rank
from .step import reduce_row, train_step


def rollouts_to_examples(rollouts, targets: torch.Tensor) -> list[TokenizedExample]:
    return [TokenizedExample(example_id=k, feedback="score", sequences=[(r.prompt_ids, r.completion_ids)],
                             target=float(t)) for k, (r, t) in enumerate(zip(rollouts, targets.tolist()))]


def train(cfg: Config) -> Path:
    run = open_run(cfg)
    check_online_config(cfg, run.dist.world_size)
    prompts = load_prompts(cfg, run.inputs.data_path, run.inputs.data_format, run.tokenizer)
    head = get_head(cfg.loss.name)
    pair = run.load_policy(need_ref=True)
    rm = RewardModel.from_pretrained(reward_model_path(cfg, run.is_main, run.barrier), device=run.device,
                                     max_length=cfg.trainer.max_length)
    start = run.start()
    engine = run.engine
    rollout = make_engine(cfg, engine.module, run.inputs.model_path)  # first sync: the (resumed) weights
    sampler = StepSampler(len(prompts.ids), cfg.rollout.prompts_per_step, cfg.trainer.seed)
    if run.is_main and prompts.dropped:
        print(f"online: dropped {prompts.dropped} prompts over the length limit")
    pad_id = run.tokenizer.pad_token_id
    try:
        for step in range(start, cfg.trainer.max_steps):
            timer = PhaseTimer()
            mine = shard_for_rank(sampler.global_batch(step), engine.dp_rank, engine.dp_world_size)
            with timer.phase("generate"):
                rollouts = rollout.generate([prompts.ids[i] for i in mine], cfg.rollout.samples_per_prompt,
                                            sampling_for_step(cfg, step, engine.dp_rank))
            with timer.phase("score"):
                rm_logits = rm.score_rollouts(rollouts)
                targets = normalize_rewards(rm_logits, cfg.loss.reward_normalize)
            examples = rollouts_to_examples(rollouts, targets)
            with timer.phase("train"):
                batches = [collate([examples[i] for i in mb], pad_id, row_length=cfg.trainer.max_length)
                           .to(run.device) for mb in micro_batches(list(range(len(examples))),
                                                                   cfg.trainer.micro_batch_size)]
                counts = engine.sum_over_dp({"score": len(examples)})
                row = train_step(engine, pair, head, batches, counts, cfg)
            with timer.phase("sync"):
                rollout.sync_weights(policy_weights_for_sync(engine.module))
            row.update(rm_reward=rm_logits.mean().item(), target_mean=targets.mean().item(),
                       response_tokens=sum(len(r.completion_ids) for r in rollouts) / len(rollouts),
                       **timer.row(), peak_memory_mb=peak_memory_mb(run.device))
            gold = gold_rewards([prompts.texts[i] for i in mine], rollouts, run.tokenizer)
            if gold is not None:
                row["gold_reward"] = sum(gold) / len(gold)
            row = reduce_row(row, engine)
            run.log(step + 1, row, int(row.pop("tokens")))
            run.maybe_save(step + 1)
    finally:
        rollout.close()
    return run.finish()
