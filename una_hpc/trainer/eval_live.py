"""eval.every in the offline loop: the live policy evaluated on held-out prompts, logged into metrics.jsonl.

    live = LiveEval.open(run)                       # before anything is written: one-line ConfigError / DataError
    if live and step % cfg.eval.every == 0:
        row.update(live.metrics())                  # eval_* keys on that step's row

What is measured: `una_hpc.trainer.evaluate.evaluate` on the first eval.num_prompts_during_training prompts of
data.eval_path, with the same seed every time, so the numbers move only with the policy:
- eval_reward, eval_reward_ci_low, eval_reward_ci_high: gold reward (embedded task) or eval.reward_model's score;
- eval_win_rate: against the baseline's responses (eval.baseline's model, else the run's reference, i.e. the base
  model), generated once at the first evaluation;
- eval_kl, eval_kl_stderr: KL(policy || reference) through the fused seq_logps op;
- eval_response_tokens, eval_eos_rate.
Without a reward (user prompts and no eval.reward_model) only KL and lengths are logged; one line says so.

The reference: with LoRA the policy with its adapter off; for full fine-tuning the frozen reference the run holds,
or, when reference logps come from the cache and the run holds none, model.ref_path (else model.path) loaded once.

No effect on training: evaluation runs under no_grad with torch's (CPU and CUDA) and Python's RNG states restored
afterwards and every module back in its previous train/eval mode, so a run with eval.every logs the same losses as
one without. Only rank 0 evaluates (other ranks wait at the next step's collectives); ZeRO-3 and tensor
parallelism shard weights that rank 0 would need alone, so eval.every refuses them with one line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Iterator

import torch
from torch import nn

from ..config import ConfigError
from ..rollout.reward import RewardModel
from .eval_kl import Reference
from .evaluate import evaluate, fit_prompts, generate, gold_function, load_model, pick_scorer, read_eval_prompts
from .run import Run


@contextlib.contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Restore torch's CPU (and this CUDA device's) RNG and Python's `random` state on exit."""
    state = random.getstate()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            yield
        finally:
            random.setstate(state)


def check_live_eval(run: Run) -> None:
    """One-line ConfigError when the resolved inputs hold no held-out prompts. The pure config rules of eval.every
    (>= 0, a multiple of trainer.log_every, zero_stage <= 2 and tp_size=1) are checked when the config loads
    (una_hpc.config.config_errors)."""
    if run.inputs.eval_path is None:
        raise ConfigError("eval.every needs held-out prompts: set data.eval_path (a file with a `prompt` column)")


@dataclasses.dataclass
class LiveEval:
    run: Run
    prompts: list
    reward_model: RewardModel | None
    has_reward: bool
    _loaded_ref: nn.Module | None = None
    _baseline: list[str] | None = None

    @classmethod
    def open(cls, run: Run) -> LiveEval | None:
        """None when eval.every is 0 or on ranks other than 0; validates (every rank) before anything is written."""
        cfg = run.cfg
        if cfg.eval.every == 0:
            return None
        check_live_eval(run)
        prompts, _ = fit_prompts(
            run.tokenizer, read_eval_prompts(run.inputs.eval_path, run.inputs.eval_split), cfg.data.max_prompt_length
        )
        prompts = prompts[: cfg.eval.num_prompts_during_training]
        if not prompts:
            raise ConfigError(
                f"eval.every: no prompt of {run.inputs.eval_path} fits data.max_prompt_length="
                f"{cfg.data.max_prompt_length}"
            )
        if not run.is_main:
            return None
        with preserved_rng(run.device):  # loading may draw from the RNG; training must not notice
            rm = (
                RewardModel.from_pretrained(cfg.eval.reward_model, device=run.device) if cfg.eval.reward_model else None
            )
        has_reward = pick_scorer(prompts, rm, gold=gold_function(cfg.eval)) is not None
        if not has_reward:
            print("eval.every: prompts outside the embedded task and no eval.reward_model: logging KL and lengths only")
        return cls(run, prompts, rm, has_reward)

    def _reference(self) -> Reference:
        pair, cfg = self.run.pair, self.run.cfg
        if pair.lora or pair.ref is not None:
            return pair.reference  # LoRA: the live policy with its adapter off
        if self._loaded_ref is None:  # reference logps came from the cache: no reference is held
            path = cfg.model.ref_path or str(self.run.inputs.model_path)
            self._loaded_ref = load_model(path, self.run.device).requires_grad_(False)
        return self._loaded_ref

    def _baseline_responses(self, reference: Reference) -> list[str]:
        cfg = self.run.cfg
        kw = dict(max_new_tokens=cfg.eval.max_new_tokens, temperature=cfg.eval.temperature, seed=cfg.trainer.seed)
        if cfg.eval.baseline:
            return generate(load_model(cfg.eval.baseline, self.run.device), self.run.tokenizer, self.prompts, **kw)
        if isinstance(reference, nn.Module):
            return generate(reference, self.run.tokenizer, self.prompts, **kw)
        with reference() as ref:
            return generate(ref, self.run.tokenizer, self.prompts, **kw)

    def metrics(self) -> dict[str, float]:
        """Evaluate the live policy now; the eval_* metrics (see the module docstring)."""
        cfg = self.run.cfg
        with preserved_rng(self.run.device), torch.no_grad():
            reference = self._reference()
            if self.has_reward and self._baseline is None:
                self._baseline = self._baseline_responses(reference)
            r = evaluate(
                self.run.engine.module,
                self.run.tokenizer,
                self.prompts,
                dataclasses.replace(cfg.eval, num_prompts=len(self.prompts)),
                baseline=self._baseline,
                reference=reference,
                reward_model=self.reward_model,
                seed=cfg.trainer.seed,
                baseline_name=cfg.eval.baseline or "reference",
            )
        row = {
            "eval_kl": r["kl"]["mean"],
            "eval_kl_stderr": r["kl"]["stderr"],
            "eval_response_tokens": r["mean_response_tokens"],
            "eval_eos_rate": r["eos_rate"],
        }
        if "reward" in r:
            lo, hi = r["reward"]["ci95"]
            row.update(eval_reward=r["reward"]["mean"], eval_reward_ci_low=lo, eval_reward_ci_high=hi)
        if "win_rate" in r:
            row["eval_win_rate"] = r["win_rate"]["rate"]
        return row
