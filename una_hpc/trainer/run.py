"""A training run's scaffolding, shared by the offline, online UNA and PPO loops.

run = open_run(cfg)                         # process group, device, model/data paths, tokenizer
...validate data / load prompts...          # before anything is written
run.load_policy(need_ref=...)               # policy (+ reference unless cached / LoRA)
run.start(engine=build_engine(...))         # resume, output dir, config copy, metrics logger
for step in range(run.start_step, cfg.trainer.max_steps):
    ...; if run.end_step(step + 1, row, tokens): break    # log, guard, checkpoint, preemption
run.finish()                                # last checkpoint + final HF export (None when preempted)

Faults (docs/faults.md): a skipped non-finite step is counted and too many in a row stop the run (faults.py);
SIGTERM / SIGUSR1 end the loop at a step boundary every rank agrees on, with a checkpoint and exit 0.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import Config, ConfigError, save_config
from ..hooks import load_function
from ..models.policy import PolicyPair, build_policy, load_tokenizer
from ..parallel import DistInfo, build_engine, init_distributed
from ..parallel.distributed import device_for
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .export import export_hf_model
from .faults import NonFiniteGuard, Preemption, any_rank
from .inputs import RunInputs, resolve_inputs
from .metrics import MetricsLogger


@dataclass
class Run:
    cfg: Config
    dist: DistInfo
    device: torch.device
    inputs: RunInputs
    tokenizer: object
    pair: PolicyPair | None = None
    engine: object = None
    start_step: int = 0
    logger: MetricsLogger | None = None
    extra_state: dict = field(default_factory=dict)
    """Loop-specific state saved with every checkpoint."""
    extra_engines: dict = field(default_factory=dict)
    """Further engines checkpointed beside the policy's (PPO's critic), by name."""
    step_hook: object = None
    """trainer.step_hook resolved (fn(step, rank, batches)), or None."""
    guard: NonFiniteGuard | None = None
    preemption: Preemption | None = None
    stopped_at: int | None = None
    """The step a preemption signal ended the run after (None: not preempted)."""
    last_step: int | None = None
    """The step trainer.max_time_s ended the run after (None: it ran to trainer.max_steps)."""
    _loop_started: float = 0.0
    _saved_at: int = -1
    _tokens_since_log: int = 0

    @property
    def is_main(self) -> bool:
        return self.dist.rank == 0

    @property
    def out(self) -> Path:
        return Path(self.cfg.trainer.output_dir)

    def load_policy(self, need_ref: bool) -> PolicyPair:
        self.pair = build_policy(self.cfg.model, self.inputs.model_path, self.device, need_ref=need_ref)
        return self.pair

    def start(self, engine=None) -> int:
        """Build (or take) the engine, resume from the latest checkpoint if asked; returns the first step."""
        self.engine = engine if engine is not None else build_engine(self.pair.policy, self.cfg)
        ckpt = latest_checkpoint(self.out) if self.cfg.trainer.resume else None
        if ckpt is not None:
            state = load_checkpoint(self.engine, ckpt, self.extra_engines)
            self.start_step, self.extra_state = state["step"], state.get("extra", {})
            if self.is_main:
                print(f"resumed from {ckpt} at step {self.start_step}")
        if self.is_main:
            if ckpt is None:  # check_output_dir let a fresh run in here only with trainer.overwrite=true
                for old in earlier_run_files(self.out):
                    print(f"trainer.overwrite=true: removing {old}")
                    shutil.rmtree(old) if old.is_dir() else old.unlink()
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.out / "config.yaml")
        self._saved_at = self.start_step
        self.guard = NonFiniteGuard(self.cfg.trainer.max_bad_steps)
        self.preemption = Preemption.install()
        self.logger = MetricsLogger(
            self.out,
            self.cfg.trainer.max_steps,
            self.start_step,
            enabled=self.is_main,
            progress=self.cfg.trainer.progress,
            tensorboard=self.cfg.trainer.tensorboard,
        )
        self._loop_started = time.perf_counter()
        return self.start_step

    def export(self, directory: Path) -> None:
        export_hf_model(self.engine, self.pair, self.tokenizer, directory)

    def save(self, step: int) -> None:
        state = {"step": step, "examples_seen": step * self.cfg.trainer.batch_size, "extra": self.extra_state}
        try:
            save_checkpoint(
                self.engine, self.out, step, state, self.export, self.cfg.trainer.keep_checkpoints, self.extra_engines
            )
        except Exception:
            if self.preemption is not None:  # the run ends here: give the process its signal handlers back
                self.preemption.uninstall()
            raise
        self._saved_at = step

    def hook(self, step: int, batches: list) -> None:
        """trainer.step_hook on this step's micro-batches (before their forward), if one is set."""
        if self.step_hook is not None:
            self.step_hook(step, self.dist.rank, batches)

    def log(self, step: int, row: dict, tokens: int, last: bool = False) -> None:
        """Count this step's tokens; write a metrics row every trainer.log_every steps, at the last step and at a
        skipped (non-finite) step; stop with one line after trainer.max_bad_steps skipped steps in a row."""
        self._tokens_since_log += tokens
        bad = self.guard.observe(step, row)
        if bad or last or step % self.cfg.trainer.log_every == 0 or step == self.cfg.trainer.max_steps:
            self.logger.log(step, row, self._tokens_since_log)
            self._tokens_since_log = 0
        if self.guard.tripped:
            self.logger.close()
            self.preemption.uninstall()
            raise self.guard.error(step, latest_checkpoint(self.out))

    def end_step(self, step: int, row: dict, tokens: int) -> bool:
        """After optimizer step `step` (1-based): log, checkpoint, and whether a preemption signal ends the run
        here (agreed over all ranks, so every rank saves the same step) or trainer.max_time_s is spent."""
        out_of_time = step < self.cfg.trainer.max_steps and self._out_of_time()
        self.log(step, row, tokens, last=out_of_time)
        self.maybe_save(step)
        if out_of_time:
            self.last_step = step
            if self.is_main:
                print(f"trainer.max_time_s={self.cfg.trainer.max_time_s:g} spent: the run ends at step {step}")
            return True
        if step < self.cfg.trainer.max_steps and self.preemption.requested(self.engine):
            self.stopped_at = step
            return True
        return False

    def _out_of_time(self) -> bool:
        budget = self.cfg.trainer.max_time_s
        return budget > 0 and any_rank(time.perf_counter() - self._loop_started > budget, self.engine.device)

    def maybe_save(self, step: int) -> None:
        if self.cfg.trainer.save_every and step % self.cfg.trainer.save_every == 0:
            self.save(step)

    def finish(self) -> Path | None:
        self.logger.close()
        if self.stopped_at is not None:  # preempted: a checkpoint to resume from, no final export
            if self._saved_at != self.stopped_at:
                self.save(self.stopped_at)
            self.preemption.uninstall()  # after the save: a second signal during it still exits at once
            if self.is_main:
                print(
                    f"preempted: saved {latest_checkpoint(self.out)} at step {self.stopped_at}; resume with "
                    f"the same command and trainer.resume=true",
                    flush=True,
                )
            return None
        self.preemption.uninstall()
        last = self.last_step or self.cfg.trainer.max_steps
        if self._saved_at != last:
            self.save(last)
        final = self.out / "final"
        self.export(final)
        return final


def earlier_run_files(output_dir: Path) -> list[Path]:
    """What an earlier run left in output_dir and a fresh run would replace: checkpoints, final model, metrics."""
    found = [output_dir / "checkpoints", output_dir / "final", output_dir / "metrics.jsonl"]
    return [p for p in found if p.exists()]


def check_output_dir(cfg: Config) -> None:
    """A fresh run never deletes an earlier run's work: one-line ConfigError unless resuming or told to overwrite."""
    out = Path(cfg.trainer.output_dir)
    if cfg.trainer.overwrite or (cfg.trainer.resume and latest_checkpoint(out) is not None):
        return
    found = earlier_run_files(out)
    if found:
        names = ", ".join(p.name for p in found)
        raise ConfigError(
            f"trainer.output_dir {out} holds an earlier run ({names}): pass trainer.resume=true to "
            "continue it, choose another trainer.output_dir, or trainer.overwrite=true to replace it"
        )


def open_run(cfg: Config) -> Run:
    check_output_dir(cfg)
    dist = init_distributed(cfg)
    device = device_for(dist.local_rank)
    torch.manual_seed(cfg.trainer.seed)
    inputs = resolve_inputs(cfg)
    hook = load_function(cfg.trainer.step_hook, setting="trainer.step_hook")
    return Run(cfg, dist, device, inputs, load_tokenizer(inputs.model_path), step_hook=hook)
