"""Validation: what load_config checks before anything runs (errors vs warnings: see una_hpc/config.py)."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import typing
import warnings
from typing import Any

from .config_schema import Config, ConfigError, ConfigWarning, _show

LOSS_LOOPS: dict[str, str] = {
    "dpo": "offline",
    "kto": "offline",
    "una_binary": "offline",
    "una_score": "offline",
    "mixed": "offline",
    "una_online": "online",
    "ppo": "ppo",
}
"""loss.name -> the training loop that runs it: una_hpc.losses.LOSSES[name].loop, restated here because this module
imports no torch (tests/unit/test_config.py keeps the two equal)."""
LOSS_FEEDBACK: dict[str, tuple[str, ...]] = {
    "dpo": ("pairwise",),
    "kto": ("binary",),
    "una_binary": ("binary",),
    "una_score": ("score",),
    "mixed": ("pairwise", "binary", "score"),
    "una_online": ("score",),
    "ppo": (),
}
"""loss.name -> the feedback types its head trains on (LOSSES[name].feedback_types)."""
LOSS_KEYS: dict[str, tuple[str, ...]] = {
    "beta": ("dpo", "kto", "una_binary", "una_score", "mixed", "una_online"),
    "normalize": ("una_score", "mixed", "una_online"),
    "binary_kind": ("una_binary", "mixed"),
    "desirable_weight": ("kto",),
    "undesirable_weight": ("kto",),
    "type_weights": ("mixed",),
    "reward_normalize": ("una_online", "ppo"),
    "online_logratio": ("una_online",),
}
"""loss.<key> -> the loss names whose head reads it; any other loss ignores it (a warning when it is set)."""

_RANGES: tuple[tuple[str, typing.Callable[[Any], bool], str], ...] = (
    ("model.lora_rank", lambda v: v >= 0, ">= 0"),
    ("model.lora_alpha", lambda v: v > 0, "> 0"),
    ("model.lora_dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("data.max_prompt_length", lambda v: v >= 1, ">= 1"),
    ("data.pack_length", lambda v: v >= 0, ">= 0 (0 = trainer.max_length)"),
    ("data.binary_threshold", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("loss.beta", lambda v: v > 0, "> 0"),
    ("loss.desirable_weight", lambda v: v >= 0, ">= 0"),
    ("loss.undesirable_weight", lambda v: v >= 0, ">= 0"),
    ("ppo.kl_coef", lambda v: v >= 0, ">= 0"),
    ("ppo.clip_range", lambda v: v > 0, "> 0"),
    ("ppo.clip_range_value", lambda v: v >= 0, ">= 0"),
    ("ppo.vf_coef", lambda v: v >= 0, ">= 0"),
    ("ppo.gamma", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("ppo.lam", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("ppo.epochs", lambda v: v >= 1, ">= 1"),
    ("ppo.kl_target", lambda v: v >= 0, ">= 0 (0 = fixed kl_coef)"),
    ("ppo.kl_horizon", lambda v: v >= 1, ">= 1"),
    ("ppo.critic_lr", lambda v: v >= 0, ">= 0 (0 = optim.lr)"),
    ("ppo.num_minibatches", lambda v: v >= 1, ">= 1"),
    ("ppo.reward_clip", lambda v: v >= 0, ">= 0 (0 = no clipping)"),
    ("optim.lr", lambda v: v > 0, "> 0"),
    ("optim.weight_decay", lambda v: v >= 0, ">= 0"),
    ("optim.adam_beta1", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optim.adam_beta2", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optim.adam_eps", lambda v: v > 0, "> 0"),
    ("optim.warmup_steps", lambda v: v >= 0, ">= 0"),
    ("optim.max_grad_norm", lambda v: v >= 0, ">= 0 (0 disables clipping)"),
    ("trainer.batch_size", lambda v: v >= 1, ">= 1"),
    ("trainer.micro_batch_size", lambda v: v >= 0, ">= 0 (0 = a rank's whole share)"),
    ("trainer.max_steps", lambda v: v >= 1, ">= 1"),
    ("trainer.max_time_s", lambda v: v >= 0, ">= 0 (0 = no time budget)"),
    ("trainer.max_length", lambda v: v >= 2, ">= 2 (one prompt and one response token)"),
    ("trainer.output_dir", lambda v: v != "", "a directory (not empty)"),
    ("trainer.seed", lambda v: v >= 0, ">= 0"),
    ("trainer.log_every", lambda v: v >= 1, ">= 1"),
    ("trainer.save_every", lambda v: v >= 0, ">= 0 (0 = only at the end)"),
    ("trainer.keep_checkpoints", lambda v: v >= 0, ">= 0 (0 = keep all)"),
    ("trainer.max_bad_steps", lambda v: v >= 0, ">= 0 (0 = never stop)"),
    ("parallel.zero_stage", lambda v: v in (0, 1, 2, 3), "0, 1, 2 or 3"),
    ("parallel.tp_size", lambda v: v >= 1, ">= 1"),
    ("rollout.prompts_per_step", lambda v: v >= 1, ">= 1"),
    ("rollout.samples_per_prompt", lambda v: v >= 1, ">= 1"),
    ("rollout.max_new_tokens", lambda v: v >= 1, ">= 1"),
    ("rollout.temperature", lambda v: v >= 0, ">= 0 (0 = greedy)"),
    ("rollout.top_p", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("rollout.top_k", lambda v: v >= -1, ">= 1, or 0 / -1 for off"),
    ("rollout.truncated_penalty", lambda v: v >= 0, ">= 0"),
    ("rollout.eval_every", lambda v: v >= 0, ">= 0 (0 = off)"),
    ("rollout.eval_prompts", lambda v: v >= 1, ">= 1"),
    ("rollout.gpu_memory_utilization", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("rollout.sync_bucket_mb", lambda v: v > 0, "> 0"),
    ("rollout.check_sync_every", lambda v: v >= 0, ">= 0 (0 = off)"),
    ("rollout.check_sync_tolerance", lambda v: v > 0, "> 0"),
    ("rollout.sleep_level", lambda v: v in (0, 1, 2), "0 (off), 1 or 2"),
    ("eval.num_prompts", lambda v: v >= 1, ">= 1"),
    ("eval.max_new_tokens", lambda v: v >= 1, ">= 1"),
    ("eval.temperature", lambda v: v >= 0, ">= 0 (0 = greedy)"),
    ("eval.every", lambda v: v >= 0, ">= 0 (0 = off)"),
    ("eval.num_prompts_during_training", lambda v: v >= 1, ">= 1"),
    ("task.dir", lambda v: v != "", "a directory (not empty)"),
    ("task.seed", lambda v: v >= 0, ">= 0"),
    ("task.sft_steps", lambda v: v >= 1, ">= 1"),
    ("task.num_prompts", lambda v: v >= 1, ">= 1"),
    ("task.responses_per_prompt", lambda v: v >= 1, ">= 1"),
    ("task.rm_steps", lambda v: v >= 1, ">= 1"),
    ("task.rm_lr", lambda v: v > 0, "> 0"),
)
"""(dotted key, test, what is valid) for every single-key range rule."""


def _get(cfg: Config, dotted: str) -> Any:
    section, name = dotted.split(".", 1)
    return getattr(getattr(cfg, section), name)


def _leaves(cfg: Config) -> typing.Iterator[tuple[str, Any]]:
    """(dotted key, value) of every field, a dict field's entries as key.entry."""
    for sec in dataclasses.fields(cfg):
        section = getattr(cfg, sec.name)
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if isinstance(value, dict):
                yield from ((f"{sec.name}.{f.name}.{k}", v) for k, v in value.items())
            else:
                yield f"{sec.name}.{f.name}", value


def _check_weights(key: str, weights: dict[str, float], out: list[str], valid: tuple[str, ...] | None = None) -> None:
    unknown = sorted(set(weights) - set(valid)) if valid is not None else []
    if unknown:
        out.append(
            f"config key {key}: unknown entr{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
            f"valid: {', '.join(valid or ())}"
        )
    values = [v for v in weights.values() if math.isfinite(v)]
    if len(values) == len(weights) and (any(v < 0 for v in values) or not sum(values) > 0):
        out.append(f"config key {key}: weights must be non-negative with a positive sum, got {_show(weights)}")


def config_errors(cfg: Config) -> list[str]:
    """Every problem of `cfg` that would stop or spoil a run, one line each (empty: none). The rules:

    - every float finite; every key in `_RANGES` within its range (ZeRO stage 0-3, top_p and
      gpu_memory_utilization in (0, 1], lr > 0, beta > 0, batch_size >= 1, micro_batch_size >= 0, log_every >= 1,
      keep_checkpoints >= 0, binary_threshold in [0, 1], ...);
    - data.attribute_weights and loss.type_weights non-negative with a positive sum, type_weights' entries among
      pairwise/binary/score; loss.desirable_weight + loss.undesirable_weight > 0; data.score_range empty or
      [low, high] with low < high;
    - trainer.resume and trainer.overwrite not both true; trainer.tensorboard=true only with tensorboard installed;
    - parallel.offload_optimizer needs zero_stage >= 1, parallel.offload_param zero_stage=3; backend=deepspeed with
      trainer.dtype=bfloat16 needs zero_stage >= 1;
    - model.ref_path only for full fine-tuning (lora_rank=0); LoRA needs lora_target_modules;
    - offline losses: a data.view other than auto must be one the head trains on (mixed: loss.name=mixed only);
      eval.every > 0 must be a multiple of trainer.log_every, needs zero_stage <= 2 and tp_size=1, and with your
      own data.path needs data.eval_path;
    - online UNA and PPO: trainer.max_length > rollout.max_new_tokens (room for a prompt), tp_size=1 (each rank's
      engine takes whole weights; ZeRO-3 syncs them bucket by bucket); PPO: ppo.num_minibatches divides the
      step's rollouts.
    """
    out: list[str] = []
    nonfinite = set()
    for key, value in _leaves(cfg):
        if isinstance(value, float) and not math.isfinite(value):
            nonfinite.add(key)
            out.append(f"config key {key}: expected a finite number, got {value}")
    for key, test, valid in _RANGES:
        section, name = key.split(".", 1)
        if key in nonfinite or not hasattr(getattr(cfg, section, None), name):
            continue
        value = _get(cfg, key)
        if not test(value):
            out.append(f"config key {key}: must be {valid}, got {_show(value)}")

    m, d, loss, tr, par, ro, ev = cfg.model, cfg.data, cfg.loss, cfg.trainer, cfg.parallel, cfg.rollout, cfg.eval
    _check_weights("data.attribute_weights", d.attribute_weights, out)
    if 0 < d.pack_length < tr.max_length:
        out.append(
            f"config key data.pack_length: {d.pack_length} is shorter than trainer.max_length={tr.max_length} "
            "(a sequence must fit one row); 0 = trainer.max_length"
        )
    if d.score_range and not (
        len(d.score_range) == 2 and all(math.isfinite(v) for v in d.score_range) and d.score_range[0] < d.score_range[1]
    ):
        out.append(f"config key data.score_range: must be empty or [low, high] with low < high, got {d.score_range}")
    _check_weights("loss.type_weights", loss.type_weights, out, valid=("pairwise", "binary", "score"))
    if (
        math.isfinite(loss.desirable_weight + loss.undesirable_weight)
        and loss.desirable_weight >= 0
        and loss.undesirable_weight >= 0
        and not loss.desirable_weight + loss.undesirable_weight > 0
    ):
        out.append("loss.desirable_weight and loss.undesirable_weight are both 0: KTO would learn nothing")

    if tr.resume and tr.overwrite:
        out.append(
            "trainer.resume=true and trainer.overwrite=true contradict each other: resume continues the run "
            "in trainer.output_dir, overwrite replaces it; pass one"
        )
    if tr.tensorboard and importlib.util.find_spec("tensorboard") is None:
        out.append(
            "trainer.tensorboard=true but tensorboard is not installed: pip install tensorboard "
            "(or trainer.tensorboard=false)"
        )

    if par.offload_optimizer and par.zero_stage == 0:
        out.append("parallel.offload_optimizer=true needs parallel.zero_stage >= 1 (ZeRO holds the optimizer state)")
    if par.offload_param and par.zero_stage != 3:
        out.append(f"parallel.offload_param=true needs parallel.zero_stage=3, got {par.zero_stage}")
    if par.backend == "deepspeed" and par.zero_stage == 0 and tr.dtype == "bfloat16":
        out.append(
            "trainer.dtype=bfloat16 under DeepSpeed needs parallel.zero_stage >= 1 (ZeRO-1 costs no more "
            "communication than stage 0)"
        )

    if m.ref_path and m.lora_rank > 0:
        out.append(
            f"model.ref_path={m.ref_path} is for full fine-tuning: with model.lora_rank={m.lora_rank} the "
            "reference is the policy with its adapter disabled; drop one of them"
        )
    if m.lora_rank > 0 and not m.lora_target_modules:
        out.append("model.lora_target_modules is empty but model.lora_rank > 0: name the modules LoRA adapts")

    loop = LOSS_LOOPS.get(loss.name, "offline")
    if loop == "offline":
        types_ = LOSS_FEEDBACK.get(loss.name, ())
        if d.view == "mixed" and len(types_) < 2:
            out.append(
                f"data.view=mixed mixes pairwise, binary and score examples, but loss.name={loss.name} trains "
                f"on {', '.join(types_)} only: use loss.name=mixed or data.view=auto"
            )
        elif d.view not in ("auto", "mixed") and d.view not in types_:
            out.append(
                f"data.view={d.view} gives {d.view} examples, which loss.name={loss.name} cannot train on "
                f"(it takes {', '.join(types_)}): use data.view=auto"
            )
        if ev.every > 0:
            if tr.log_every >= 1 and ev.every % tr.log_every:
                out.append(
                    f"eval.every={ev.every} must be a multiple of trainer.log_every={tr.log_every} (the eval_* "
                    "keys ride on that step's metrics row)"
                )
            if par.zero_stage == 3 or par.tp_size > 1:
                out.append("eval.every evaluates on rank 0 alone: use parallel.zero_stage <= 2 and parallel.tp_size=1")
            if d.path and not d.eval_path:
                out.append("eval.every needs held-out prompts: set data.eval_path (a file with a `prompt` column)")
    else:
        if tr.max_length <= ro.max_new_tokens:
            out.append(
                f"trainer.max_length={tr.max_length} leaves no room for a prompt: it must exceed "
                f"rollout.max_new_tokens={ro.max_new_tokens} (loss.name={loss.name} generates)"
            )
        if par.tp_size > 1:
            out.append(
                "online runs sync whole weights into each rank's rollout engine: tensor parallelism is not "
                "wired for them; use parallel.tp_size=1 (ZeRO-0..3 work)"
            )
        if par.zero_stage == 3 and ro.engine == "hf":
            out.append("rollout.engine=hf cannot sample from a ZeRO-3 partitioned policy: use rollout.engine=vllm")
        per_step = ro.prompts_per_step * ro.samples_per_prompt
        if loop == "ppo" and cfg.ppo.num_minibatches >= 1 and per_step % cfg.ppo.num_minibatches:
            out.append(
                f"ppo.num_minibatches={cfg.ppo.num_minibatches} must divide the {per_step} rollouts of a step "
                "(rollout.prompts_per_step x rollout.samples_per_prompt)"
            )
        if ro.reward_fn and ro.reward_model:
            out.append(
                f"rollout.reward_fn={ro.reward_fn} and rollout.reward_model={ro.reward_model}: the explicit "
                "reward comes from one of them; empty the other"
            )
        out += _rollout_feature_errors(cfg, loop)
    return out


def _rollout_feature_errors(cfg: Config, loop: str) -> list[str]:
    """Online UNA / PPO: stop strings, group normalization, truncated completions, rollout.eval_every."""
    out: list[str] = []
    ro, d, tr = cfg.rollout, cfg.data, cfg.trainer
    if any(not isinstance(s, str) or not s for s in ro.stop):
        out.append(f"config key rollout.stop: every stop string must be a non-empty string, got {_show(ro.stop)}")
    if cfg.loss.reward_normalize in ("group", "group_std") and ro.samples_per_prompt < 2:
        out.append(
            f"loss.reward_normalize={cfg.loss.reward_normalize} compares the samples of a prompt: it needs "
            f"rollout.samples_per_prompt >= 2, got {ro.samples_per_prompt}"
        )
    if loop == "ppo" and ro.truncated == "drop":
        out.append(
            "rollout.truncated=drop is for online UNA: PPO's minibatches need every rollout of a step; use "
            "rollout.truncated=penalty"
        )
    if ro.eval_every > 0:
        if tr.log_every >= 1 and ro.eval_every % tr.log_every:
            out.append(
                f"rollout.eval_every={ro.eval_every} must be a multiple of trainer.log_every={tr.log_every} (the "
                "eval_* keys ride on that step's metrics row)"
            )
        if d.path and not (d.eval_path or d.eval_split):
            out.append("rollout.eval_every needs held-out prompts: set data.eval_path (a file with a `prompt` column)")
    return out


def _changed(section: Any, name: str) -> bool:
    return getattr(section, name) != getattr(type(section)(), name)


def config_warnings(cfg: Config) -> list[str]:
    """Keys set away from their defaults that this run ignores, one line each (see the module docstring):

    - loss.<key> that loss.name's head does not read (LOSS_KEYS); ppo.* unless loss.name=ppo; rollout.* (but
      rollout.reward_model, which train-rm writes) for an offline loss;
    - for online UNA / PPO: data.view, data.binary_threshold, data.truncation, data.ref_cache, eval.every, and a
      trainer.batch_size other than rollout.prompts_per_step x rollout.samples_per_prompt;
    - LoRA keys with model.lora_rank=0; parallel.zero_stage/tp_size/offload_* with parallel.backend=none;
      data.packing=false (not wired: the loops always pack); data.format with an empty data.path (the embedded
      task's data is helpsteer2).

    Not reported: trainer.micro_batch_size above a rank's share (it acts as 0, see its doc) and optim.warmup_steps
    longer than the run: short runs of a long run's YAML (trainer.batch_size=4 on quickstart's micro-batch 8,
    trainer.max_steps=2 on its 10 warmup steps) are how the tests and a first try use it.
    """
    out: list[str] = []
    m, d, loss, tr, par, ro, ev = cfg.model, cfg.data, cfg.loss, cfg.trainer, cfg.parallel, cfg.rollout, cfg.eval
    name = loss.name
    loop = LOSS_LOOPS.get(name, "offline")
    for key, users in LOSS_KEYS.items():
        if hasattr(loss, key) and name not in users and _changed(loss, key):
            out.append(
                f"loss.{key}={_show(getattr(loss, key))} is ignored by loss.name={name} (read by {', '.join(users)})"
            )
    if name != "ppo":
        for f in dataclasses.fields(cfg.ppo):
            if _changed(cfg.ppo, f.name):
                out.append(
                    f"ppo.{f.name}={_show(getattr(cfg.ppo, f.name))} is ignored by loss.name={name} (only "
                    "loss.name=ppo reads ppo.*)"
                )
    if loop == "offline":
        for f in dataclasses.fields(ro):
            if f.name not in ("reward_model", "reward_fn") and _changed(ro, f.name):
                out.append(
                    f"rollout.{f.name}={_show(getattr(ro, f.name))} is ignored by loss.name={name} (an "
                    "offline loss generates nothing)"
                )
    else:
        why = f"is ignored by loss.name={name} (it trains on its own rollouts)"
        for key in ("view", "binary_threshold", "truncation", "ref_cache"):
            if _changed(d, key):
                out.append(f"data.{key}={_show(getattr(d, key))} {why}")
        if ev.every > 0:
            out.append(
                f"eval.every={ev.every} is ignored by loss.name={name} (offline training only; online: "
                "rollout.eval_every)"
            )
        if name == "ppo" and loss.reward_normalize in ("minmax", "zscore", "none"):
            out.append(
                f"loss.reward_normalize={loss.reward_normalize} is ignored by loss.name=ppo (it reads group and "
                "group_std only; ppo.reward_whiten standardizes its rewards)"
            )
        if ro.truncated != "penalty" and _changed(ro, "truncated_penalty"):
            out.append(
                f"rollout.truncated_penalty={ro.truncated_penalty:g} is ignored by rollout.truncated={ro.truncated}"
            )
        per_step = ro.prompts_per_step * ro.samples_per_prompt
        if _changed(tr, "batch_size") and tr.batch_size != per_step:
            out.append(
                f"trainer.batch_size={tr.batch_size} is ignored by loss.name={name}: a step trains on "
                f"rollout.prompts_per_step x rollout.samples_per_prompt = {per_step} responses"
            )
    if m.lora_rank == 0:
        for key in ("lora_alpha", "lora_dropout", "lora_target_modules"):
            if _changed(m, key):
                out.append(f"model.{key}={_show(getattr(m, key))} is ignored with model.lora_rank=0 (full fine-tuning)")
    if par.backend == "none":
        for key in ("zero_stage", "tp_size", "offload_optimizer", "offload_param"):
            if _changed(par, key):
                out.append(
                    f"parallel.{key}={_show(getattr(par, key))} is ignored by parallel.backend=none (single "
                    "process, plain torch)"
                )
    if not d.packing:
        out.append("data.packing=false is ignored: not wired yet, the offline and online loops always pack")
    if not d.path and d.format not in ("auto", "score", "helpsteer2"):
        out.append(
            f"data.format={d.format} is ignored: data.path is empty, so the embedded task's helpsteer2 data is used"
        )
    return out


def validate_config(cfg: Config, *, warn: bool = True) -> Config:
    """Raise ConfigError listing every problem (`config_errors`), else warn (ConfigWarning) once per line of
    `config_warnings`; returns `cfg` unchanged."""
    errors = config_errors(cfg)
    if errors:
        raise ConfigError(errors)
    if warn:
        for line in config_warnings(cfg):
            warnings.warn(line, ConfigWarning, stacklevel=3)
    return cfg
