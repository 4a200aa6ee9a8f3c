"""What online UNA and the PPO baseline share: prompts, the rollout engine, the reward model, timing and logging.

    .venv/bin/python -m pytest tests/integration/test_online.py -q       (about 4 minutes: real vLLM runs)

Both loops reuse the offline pieces unchanged — the engine (plain torch or DeepSpeed), checkpoints and resume,
the metrics logger and progress bar — so UNA-vs-PPO comparisons differ only in the update rule. The explicit reward
comes from rollout.reward_model as given (the entry points fill in the embedded task's) or from a batched function,
rollout.reward_fn=module:function; the exact gold reward logged beside it comes from the eval.gold_reward hook.
Completions cut by max_new_tokens are handled here (rollout.truncated, before either loop normalizes the reward),
and rollout.eval_every's held-out evaluation (online_eval.py) rides on the step's metrics row.

Under the deepspeed launcher every data-parallel rank holds its own colocated engine, samples its strided share of
the step's prompts (its own seeds), scores and trains; batch statistics go through `global_then_mine` or the
engine's all-reduce, so results do not depend on the rank count. After every step each rank syncs its engine
(ZeRO-3: bucketed gathers, rollout.sync_bucket_mb) and, every rollout.check_sync_every steps, probes it against
the trainer. Tested by: .venv/bin/python -m pytest tests/distributed/test_online_dp.py -q
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import Config, ConfigError
from ..data.convert import prompts_of
from ..data.io import load_table
from ..data.tokenize import TokenizedExample, encode_prompts
from ..hooks import load_function
from ..rollout.base import Rollout, SamplingSettings
from ..rollout.factory import make_engine
from ..rollout.reward import RewardModel
from ..rollout.reward_fn import RewardFunction
from ..rollout.sync_check import probe_sync
from ..rollout.truncation import handle_truncated
from ..rollout.weights import weights_for_sync
from .online_eval import OnlineEval
from .run import Run, open_run
from .sampler import StepSampler, shard_for_rank
from .step import reduce_row


@dataclass
class PromptSet:
    texts: list
    """Prompts (str or message lists) that fit the length limit."""
    ids: list[list[int]]
    """Their token ids as the policy sees them (chat template applied)."""
    dropped: int
    """Prompts over data.max_prompt_length, dropped (paper: 512 tokens)."""


def load_prompt_set(cfg: Config, data_path: Path, data_format: str, tokenizer) -> PromptSet:
    """The prompts of data.path that fit the length limit, with their token ids (rollouts start from these). Any
    TRL type has prompts (prompt-only, prompt-completion, preference, ...; data.format=auto detects it)."""
    source = str(data_path)
    prompts = prompts_of(load_table(data_path, split=cfg.data.split), data_format, source, cfg.data.attribute_weights)
    ids = encode_prompts(tokenizer, prompts, source)
    limit = min(cfg.data.max_prompt_length, cfg.trainer.max_length - cfg.rollout.max_new_tokens)
    keep = [i for i, x in enumerate(ids) if len(x) <= limit]
    if not keep:
        raise ValueError(
            f"{source}: no prompt fits {limit} tokens (data.max_prompt_length, trainer.max_length "
            f"- rollout.max_new_tokens)"
        )
    return PromptSet([prompts[i] for i in keep], [ids[i] for i in keep], len(ids) - len(keep))


def check_online_config(cfg: Config, dp_world_size: int) -> None:
    """One-line ConfigErrors for online settings this harness cannot run correctly."""
    if not (cfg.rollout.reward_model or cfg.rollout.reward_fn):  # the entry points fill it for the embedded task
        raise ConfigError(
            "rollout.reward_model and rollout.reward_fn are empty but model.path is set: the embedded "
            "reward model is trained for the embedded task only; pass your own with "
            "rollout.reward_model (e.g. one trained by `una-hpc train-rm`) or a function with "
            "rollout.reward_fn=module:function"
        )
    if cfg.parallel.tp_size > 1:
        raise ConfigError(
            "online runs sync whole weights into each rank's rollout engine: tensor parallelism is not wired for "
            "them; use parallel.tp_size=1 (ZeRO-0..3 work)"
        )
    if cfg.parallel.zero_stage == 3 and cfg.rollout.engine == "hf":
        # HF generate stops at EOS per rank: ranks would run different numbers of ZeRO-3 gathering forwards
        raise ConfigError("rollout.engine=hf cannot sample from a ZeRO-3 partitioned policy: use rollout.engine=vllm")
    if cfg.rollout.prompts_per_step % dp_world_size:
        raise ConfigError(
            f"rollout.prompts_per_step={cfg.rollout.prompts_per_step} must be a multiple of the "
            f"{dp_world_size} data-parallel ranks"
        )


def sampling_for_step(cfg: Config, step: int, rank: int) -> SamplingSettings:
    """Per-step seeds: a resumed run samples exactly what the killed run would have sampled."""
    return SamplingSettings.from_config(cfg.rollout, seed=cfg.trainer.seed * 7919 + step * 1009 + rank * 100_003)


def peak_memory_mb(device: torch.device) -> float:
    """CUDA max allocated on GPU, else the process's peak RSS (what the UNA-vs-PPO benchmark compares)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with open("/proc/self/status") as f:  # VmHWM: unlike ru_maxrss, not inherited from a parent across exec
        return int(next(line.split()[1] for line in f if line.startswith("VmHWM:"))) / 1024


@dataclass
class PhaseTimer:
    """Wall time per phase of one step: generate / score / train / sync."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def row(self) -> dict[str, float]:
        return {f"time_{k}_s": v for k, v in self.seconds.items()}


def global_then_mine(engine, values: torch.Tensor, fn) -> torch.Tensor:
    """`fn` applied to every data-parallel rank's `values` (concatenated in rank order), and this rank's part of
    the result: batch statistics (min-max, z-score, group means) over the global batch, so results do not depend
    on the rank count. Each rank holds whole prompt groups, so per-prompt groups stay contiguous."""
    if engine.dp_world_size == 1:
        return fn(values)
    everything, lengths = engine.all_gather_dp(values)
    start = sum(lengths[: engine.dp_rank])
    return fn(everything)[start : start + values.shape[0]]


def gold_rewards(gold, prompts: list, rollouts: list[Rollout], tokenizer) -> list[float] | None:
    """The exact reward of each rollout from the eval.gold_reward hook `gold`, or None (no hook, or prompts it does
    not know). `prompts` are indexed by Rollout.prompt_index."""
    if gold is None:
        return None
    responses = [tokenizer.decode(r.completion_ids, skip_special_tokens=True) for r in rollouts]
    return gold([prompts[r.prompt_index] for r in rollouts], responses)


def rollouts_to_examples(rollouts: list[Rollout], targets: torch.Tensor) -> list[TokenizedExample]:
    """Each sampled response becomes one `score` example (prompt ids, completion ids, target)."""
    return [
        TokenizedExample(example_id=k, feedback="score", sequences=[(r.prompt_ids, r.completion_ids)], target=float(t))
        for k, (r, t) in enumerate(zip(rollouts, targets.tolist()))
    ]


@dataclass
class OnlineHarness:
    """Prompts -> rollouts -> reward-model scores -> (the loop's update) -> weight sync -> metrics and checkpoints.

    The update rule is the only thing online UNA and PPO do differently; everything around it lives here.
    """

    run: Run
    prompts: PromptSet
    rm: RewardModel | RewardFunction
    """Scores rollouts: the reward model, or rollout.reward_fn."""
    gold: object = None
    """The eval.gold_reward hook (a function) or None."""
    rollout: object = None
    sampler: StepSampler | None = None
    evaluator: OnlineEval | None = None
    """rollout.eval_every's held-out evaluation (rank 0), or None."""
    sampled: list[Rollout] = field(default_factory=list)
    """This rank's rollouts of the current step as sampled, before rollout.truncated=drop (for the metrics)."""
    truncated: int = 0
    """How many of them hit max_new_tokens without finishing."""
    sum_keys: tuple[str, ...] = ("loss", "tokens")
    """Metrics that are each rank's share of a global sum (summed over ranks; the others are averaged)."""

    @classmethod
    def open(cls, cfg: Config) -> OnlineHarness:
        run = open_run(cfg)
        check_online_config(cfg, run.dist.world_size)
        prompts = load_prompt_set(cfg, run.inputs.data_path, run.inputs.data_format, run.tokenizer)
        if run.is_main and prompts.dropped:
            print(f"online: dropped {prompts.dropped} prompts over the length limit")
        run.load_policy(need_ref=True)
        if cfg.rollout.reward_fn:
            rm = RewardFunction.load(cfg.rollout.reward_fn)
        else:
            rm = RewardModel.from_pretrained(
                cfg.rollout.reward_model, device=run.device, max_length=cfg.trainer.max_length
            )
        gold = load_function(cfg.eval.gold_reward, setting="eval.gold_reward")
        return cls(run, prompts, rm, gold, evaluator=OnlineEval.open(run, rm, gold))

    def start(self, engine=None) -> int:
        """Resume (if asked), then start the rollout engine on the resumed weights."""
        start = self.run.start(engine)
        self.run.out.mkdir(parents=True, exist_ok=True)  # every rank's engine logs there (rank 0 may not have made it)
        self.rollout = make_engine(self.run.cfg, self.run.engine.module, self.run.inputs.model_path)
        self.sampler = StepSampler(
            len(self.prompts.ids), self.run.cfg.rollout.prompts_per_step, self.run.cfg.trainer.seed
        )
        return start

    def sample(self, step: int, timer: PhaseTimer) -> tuple[list[int], list[Rollout], torch.Tensor]:
        """This rank's prompts of the step, their rollouts to train on and their explicit rewards (reward-model
        logits or reward_fn values), after rollout.truncated's penalty or drop."""
        cfg, engine = self.run.cfg, self.run.engine
        mine = shard_for_rank(self.sampler.global_batch(step), engine.dp_rank, engine.dp_world_size)
        with timer.phase("generate"):
            rollouts = self.rollout.generate(
                [self.prompts.ids[i] for i in mine],
                cfg.rollout.samples_per_prompt,
                sampling_for_step(cfg, step, engine.dp_rank),
            )
        with timer.phase("score"):  # rollout.prompt_index indexes `mine`; an RM with another tokenizer needs texts
            logits = self.rm.score_rollouts(rollouts, [self.prompts.texts[i] for i in mine], self.run.tokenizer).to(
                self.run.device
            )
        ro = cfg.rollout
        keep, logits, self.truncated = handle_truncated(
            rollouts, logits, ro.truncated, ro.truncated_penalty, clamp_unit=cfg.loss.reward_normalize == "none"
        )
        self.sampled = rollouts
        return mine, [rollouts[i] for i in keep], logits

    def _sleep(self) -> None:
        """vLLM sleep mode (rollout.sleep_level, CUDA): free the engine's memory while the trainer runs."""
        if hasattr(self.rollout, "sleep"):
            self.rollout.sleep()

    def _wake(self) -> None:
        if hasattr(self.rollout, "wake_up"):
            self.rollout.wake_up()

    def finish_step(self, step: int, row: dict, mine: list[int], rollouts: list[Rollout], timer: PhaseTimer) -> bool:
        """Sync the new weights into the engine, add timing/memory/gold reward, log and checkpoint; whether a
        preemption signal ends the run here."""
        engine, ro = self.run.engine, self.run.cfg.rollout
        with timer.phase("sync"):
            self._wake()
            self.rollout.sync_weights(weights_for_sync(engine.module, ro.sync_bucket_mb))
        if ro.check_sync_every and (step + 1) % ro.check_sync_every == 0:
            probe = (self.sampled or rollouts)[0].prompt_ids
            with timer.phase("check_sync"):
                row["sync_drift"] = probe_sync(self.rollout, engine, probe, ro.check_sync_tolerance, step + 1)
        rollouts = self.sampled or rollouts  # what was sampled, also what rollout.truncated=drop left out
        row.update(
            response_tokens=sum(len(r.completion_ids) for r in rollouts) / len(rollouts),
            **timer.row(),
            peak_memory_mb=peak_memory_mb(self.run.device),
        )
        gold = gold_rewards(self.gold, [self.prompts.texts[i] for i in mine], rollouts, self.run.tokenizer)
        if gold is not None:
            row["gold_reward"] = sum(gold) / len(gold)
        row = reduce_row(row, engine, self.sum_keys)
        row["truncated"] = engine.sum_over_dp({"n": self.truncated})["n"]  # a count over all ranks
        if self.evaluator is not None and (step + 1) % self.run.cfg.rollout.eval_every == 0:
            t0 = time.perf_counter()
            row.update(self.evaluator.metrics(self.rollout))
            row["time_eval_s"] = time.perf_counter() - t0
        return self.run.end_step(step + 1, row, int(row.pop("tokens")))

    def train(self, update) -> Path | None:
        """`update(step, mine, rollouts, rm_logits) -> metrics row (with "tokens")`, timed as "train", every step."""
        try:
            for step in range(self.run.start_step, self.run.cfg.trainer.max_steps):
                timer = PhaseTimer()
                mine, rollouts, logits = self.sample(step, timer)
                self._sleep()
                with timer.phase("train"):
                    row = update(step, mine, rollouts, logits)
                if self.finish_step(step, row, mine, rollouts, timer):
                    break  # preempted: finish() saves this step and exits 0
        finally:
            self.rollout.close()
        return self.run.finish()
