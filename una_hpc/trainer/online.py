"""Online UNA (loss.name=una_online): sample -> reward model -> normalize to [0, 1] -> UNA MSE -> step -> weight sync.

    una-hpc train configs/online_una.yaml                      # vLLM colocated (rollout.engine=vllm)
    una-hpc train configs/online_una.yaml rollout.engine=hf    # HF generate on the policy itself

No value model, no GAE: each sampled response is one `score` example regressed with the offline step
(`train_step`, the same kernel pass for policy and reference), so checkpoints, resume, metrics and DeepSpeed are the
offline loop's. After every optimizer step the policy's weights (LoRA merged on the fly) are pushed into the engine.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..data.packing import collate
from ..losses import get_head, normalize_rewards
from .online_common import OnlineHarness, global_then_mine, rollouts_to_examples
from .sampler import micro_batches
from .step import shared_prompts, train_step


def train(cfg: Config) -> Path:
    harness = OnlineHarness.open(cfg)
    run, head = harness.run, get_head(cfg.loss.name)
    harness.start()
    engine, pad_id = run.engine, run.tokenizer.pad_token_id
    share = shared_prompts(cfg, run.pair, loud=run.dist.rank == 0)  # a prompt's samples store it once

    def update(step, mine, rollouts, rm_logits) -> dict:
        # group / group_std: a prompt's samples are one group (all on this rank: prompts are sharded whole)
        groups = [r.prompt_index for r in rollouts]
        if cfg.loss.reward_normalize in ("minmax", "zscore"):  # batch statistics: over every rank's rewards
            targets = global_then_mine(engine, rm_logits, lambda x: normalize_rewards(x, cfg.loss.reward_normalize))
        else:
            targets = normalize_rewards(rm_logits, cfg.loss.reward_normalize, groups=groups)
        examples = rollouts_to_examples(rollouts, targets)
        row_length = cfg.data.row_length(cfg.trainer.max_length)
        batches = [
            collate([examples[i] for i in mb], pad_id, row_length=row_length, share_prompt=share).to(run.device)
            for mb in micro_batches(list(range(len(examples))), cfg.trainer.micro_batch_size)
        ]
        run.hook(step, batches)
        row = train_step(engine, run.pair, head, batches, engine.sum_over_dp({"score": len(examples)}), cfg)
        return {**row, "rm_reward": rm_logits.mean().item(), "target_mean": targets.mean().item()}

    return harness.train(update)
