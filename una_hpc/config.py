"""Typed configuration: one dataclass per concern, YAML files and `key.sub=value` overrides.

    cfg = load_config("configs/quickstart.yaml", ["loss.beta=0.1", "trainer.max_steps=20"])

Every field carries a docstring (`una-hpc config [CONFIG] [key=value ...]` prints them all, see `describe`). An
unknown key or a wrongly typed value raises ConfigError with one line that names the key and what is valid; nothing
else in the package parses configuration.

Checked when the config loads (`load_config` -> `validate_config`), before anything runs: every range (ZeRO stage
0-3, top_p in (0, 1], lr > 0, ...) and every cross-field rule that needs no model, data or world size (see
`config_errors` for the list). All problems are reported at once, one line each: `ConfigError.problems`, joined by
newlines in `str(err)`; the CLI prints each as its own `error:` line. What needs the launch stays a run-time check:
trainer.batch_size and rollout.prompts_per_step divisible by the data-parallel ranks, paths that must exist.

Errors and warnings. An error is a value that cannot run, contradicts another key, or needs something missing
(out of range, resume+overwrite, offload without ZeRO, tensorboard not installed, a data.view the loss cannot
train on). A key that is valid but has no effect in this run is a warning, never an error: e.g. `ppo.*` while
loss.name is not ppo, `rollout.*` for an offline loss, loss.binary_kind outside una_binary/mixed, LoRA keys with
lora_rank=0 ("... is ignored by loss.name=dpo"). Overriding loss.name on the command line of a YAML tuned for
another loss is the documented workflow, so what it leaves behind must not stop the run. Warnings are only for keys
set away from their defaults; they are ConfigWarning (`warnings.warn`), which the CLI prints as `warning:` lines.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
import json
import math
import os
import textwrap
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

DataFormat = Literal["pairwise", "binary", "score", "helpsteer2", "conversational", "text"]
LossName = Literal["dpo", "kto", "una_binary", "una_score", "mixed", "una_online", "ppo"]
KLEstimator = Literal["k1", "k2", "k3", "abs"]
"""Per-token KL estimates of PPO's reward (una_hpc.losses.ppo.kl_penalty); the one list of the choices."""


class ConfigError(ValueError):
    """Configuration problems, one line each (unknown key, bad type, bad choice, out of range, contradiction).

    `problems` holds the lines; `str(err)` joins them with newlines (one problem: one line, no newline)."""

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class ConfigWarning(UserWarning):
    """A key that is valid but has no effect in this run (see the module docstring); one line."""


@dataclass
class ModelConfig:
    path: str = ""
    """HF model directory or Hub id (AutoModelForCausalLM; Hub ids resolve through the local Hub cache, which
    HF_HUB_OFFLINE=1 restricts to what is cached). Empty: the embedded default tiny Llama, built on first use."""
    ref_path: str = ""
    """Reference model directory for full fine-tuning. Empty: a frozen copy of `path`. With LoRA the reference is
    the policy with its adapter disabled, so ref_path with lora_rank > 0 is an error."""
    lora_rank: int = 0
    """LoRA rank; 0 = full fine-tuning. The paper uses r=32."""
    lora_alpha: int = 16
    """LoRA scaling numerator (scale = alpha / rank)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input."""
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Module names LoRA adapts."""
    attn_implementation: Literal["auto", "sdpa", "flash_attention_2", "eager"] = "auto"
    """auto = flash_attention_2 when flash_attn is installed on CUDA, else sdpa."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward (saves memory on long sequences)."""


@dataclass
class DataConfig:
    path: str = ""
    """Training data: a jsonl/json/parquet/csv file, a `save_to_disk` dir, a dir of data files, or a Hub dataset id
    (resolved through the Hub cache; HF_HUB_OFFLINE=1 reads only the cache). Empty: the embedded synthetic task."""
    split: str = "train"
    """Split to train on when data.path is a dir of data files, a DatasetDict or a Hub id (e.g. `train_prefs`)."""
    format: DataFormat = "score"
    """Row format; column names follow TRL (see una_hpc/data/formats.py)."""
    eval_path: str = ""
    """Held-out prompts for `eval`. Empty: the embedded task's held-out split."""
    view: Literal["auto", "pairwise", "binary", "score", "mixed"] = "auto"
    """Which feedback view to derive from scored data; auto follows loss.name."""
    attribute_weights: dict[str, float] = field(
        default_factory=lambda: {"helpfulness": 0.65, "correctness": 0.8, "coherence": 0.45}
    )
    """HelpSteer2 attribute weights for the combined score (0-4 attributes mapped to [0,1], renormalized)."""
    binary_threshold: float = 0.5
    """Scored -> binary view: score >= threshold is desirable."""
    max_prompt_length: int = 256
    """Prompt token limit (paper: 512)."""
    truncation: Literal["error", "drop", "truncate_prompt"] = "truncate_prompt"
    """What to do with a prompt over max_prompt_length: report it, drop the row, or keep its last tokens."""
    packing: bool = True
    """Pack sequences into rows of trainer.max_length (pair-atomic, block-diagonal attention). Not wired yet: the
    offline and online loops always pack and PPO never does, so false has no effect (a warning says so)."""
    ref_cache: bool = True
    """Compute reference logps once and cache them by dataset fingerprint and reference-model hash."""
    cache_dir: str = "runs/.cache"
    """Where the reference-logp cache lives (shared across runs and resumes)."""


@dataclass
class LossConfig:
    name: LossName = "una_score"
    """Loss head from the registry (una_hpc.losses.LOSSES)."""
    beta: float = 0.03
    """Implicit reward scale: r = beta * (logp - ref_logp). Paper: 0.01 binary, 0.03 dpo/kto/score, 30 online."""
    normalize: Literal["sigmoid", "none"] = "sigmoid"
    """Implicit-reward normalization for score regression."""
    binary_kind: Literal["mse", "bce"] = "mse"
    """UNA-binary regression: MSE on sigmoid(r) or BCE-with-logits on r."""
    desirable_weight: float = 1.0
    """KTO lambda_D."""
    undesirable_weight: float = 1.0
    """KTO lambda_U."""
    type_weights: dict[str, float] = field(default_factory=lambda: {"pairwise": 1.0, "binary": 1.0, "score": 1.0})
    """Mixed head: weight of each feedback type's mean loss."""
    reward_normalize: Literal["sigmoid", "minmax", "zscore", "none"] = "sigmoid"
    """Online UNA: map the explicit rewards (reward-model logits or rollout.reward_fn values) to [0, 1]; `none`
    takes them as they are (a reward function that already returns [0, 1]; other values are an error)."""


@dataclass
class PPOConfig:
    kl_coef: float = 0.05
    """Per-token KL penalty coefficient in the reward (the paper's RLHF beta is configurable here)."""
    clip_range: float = 0.2
    """Clipped surrogate epsilon."""
    clip_range_value: float = 0.2
    """Value-function clip."""
    vf_coef: float = 0.1
    """Value loss weight."""
    gamma: float = 1.0
    """Discount."""
    lam: float = 0.95
    """GAE lambda."""
    epochs: int = 2
    """PPO epochs per rollout batch."""
    kl_estimator: KLEstimator = "k1"
    """Per-token KL estimate in the reward (k1 = logp - ref_logp, as TRL/OpenRLHF)."""
    whiten_advantages: bool = True
    """Whiten advantages over each rollout batch's response tokens."""


@dataclass
class OptimConfig:
    lr: float = 5e-6
    """Peak learning rate (paper: 3e-5 UNA-score, 5e-6 others, 3e-6 online)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.999
    """AdamW beta2."""
    adam_eps: float = 1e-8
    """AdamW epsilon."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Decay after warmup."""
    warmup_steps: int = 0
    """Linear warmup steps."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm; 0 disables."""


@dataclass
class TrainerConfig:
    batch_size: int = 8
    """Examples per optimizer step, over all data-parallel ranks together (a pair is one example); must be a multiple
    of the data-parallel rank count (checked at launch). Offline losses only: an online UNA / PPO step trains on
    rollout.prompts_per_step x rollout.samples_per_prompt responses. train-rm: its batch size."""
    micro_batch_size: int = 0
    """Examples per forward/backward on ONE data-parallel rank (online UNA / PPO: responses); a rank accumulates
    gradients over its micro-batches into one optimizer step. 0 = the rank's whole share in one forward/backward
    (batch_size / data-parallel ranks; online: prompts_per_step / ranks x samples_per_prompt); a value above the
    share acts as 0. The no-grad reference-logp pass uses the same size."""
    max_steps: int = 100
    """Optimizer steps."""
    max_length: int = 256
    """Token limit per sequence (prompt + response) and per packed row."""
    output_dir: str = "runs/quickstart"
    """Where metrics.jsonl, checkpoints and the final model go."""
    seed: int = 42
    """Seeds data order, init and sampling."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Compute dtype (bfloat16 = autocast with fp32 master weights)."""
    log_every: int = 1
    """Steps between metrics.jsonl rows."""
    save_every: int = 0
    """Steps between checkpoints; 0 = only at the end."""
    keep_checkpoints: int = 2
    """How many step checkpoints to keep (the newest); 0 = keep all."""
    resume: bool = False
    """Continue from the latest checkpoint in output_dir (a fresh start when it holds none)."""
    overwrite: bool = False
    """Let a fresh run (resume=false) replace the checkpoints, final model and metrics an earlier run left in
    output_dir. Off: such a directory stops the run with one line before anything is loaded or written."""
    progress: bool = True
    """Show a progress bar (tokens/s, ETA, loss)."""
    tensorboard: bool = False
    """Also log the metrics to TensorBoard (output_dir/tensorboard); true needs `pip install tensorboard` (checked
    when the config loads)."""


@dataclass
class ParallelConfig:
    backend: Literal["auto", "none", "deepspeed"] = "auto"
    """auto = deepspeed when launched by the deepspeed launcher (WORLD_SIZE > 1), else single process."""
    zero_stage: int = 0
    """DeepSpeed ZeRO stage 0-3."""
    offload_optimizer: bool = False
    """ZeRO optimizer state offload to CPU."""
    offload_param: bool = False
    """ZeRO-3 parameter offload to CPU."""
    tp_size: int = 1
    """AutoTP tensor-parallel size."""
    dist_backend: Literal["auto", "nccl", "gloo"] = "auto"
    """torch.distributed backend; auto = nccl on CUDA, gloo on CPU."""


@dataclass
class RolloutConfig:
    engine: Literal["vllm", "hf"] = "vllm"
    """Generation engine for online runs."""
    allow_hf_fallback: bool = False
    """Use the HF engine when vLLM is missing (otherwise a one-line error)."""
    prompts_per_step: int = 8
    """Prompts sampled per online step."""
    samples_per_prompt: int = 4
    """Responses per prompt."""
    max_new_tokens: int = 48
    """Generation length."""
    temperature: float = 1.0
    """Sampling temperature."""
    top_p: float = 1.0
    """Nucleus sampling."""
    gpu_memory_utilization: float = 0.3
    """vLLM memory fraction when colocated with training."""
    reward_model: str = ""
    """Reward model dir or Hub id (AutoModelForSequenceClassification, num_labels=1). Empty with the embedded
    default: its RM; with your own model.path: set this or rollout.reward_fn."""
    reward_fn: str = ""
    """Batched reward function "module:function" `(prompts, completions: list[str]) -> list[float]`, used instead
    of a reward model (una_hpc/rollout/reward_fn.py). Empty: the reward model."""


@dataclass
class EvalConfig:
    num_prompts: int = 256
    """Held-out prompts (data.eval_path) `una-hpc eval` generates on (the embedded task holds out 256)."""
    max_new_tokens: int = 48
    """Generation length."""
    temperature: float = 0.0
    """0 = greedy."""
    baseline: str = ""
    """Model dir for the win rate; empty = the base model (`una-hpc eval`: model.path; eval.every: the run's
    reference, i.e. LoRA's adapter-off policy or the frozen reference)."""
    reward_model: str = ""
    """Reward model dir (AutoModelForSequenceClassification, num_labels=1, any tokenizer: it scores texts) that
    scores eval responses on prompts outside the embedded task; it may be rollout.reward_model, though a held-out RM
    judges an RM-trained policy more fairly. The embedded task's prompts always use their exact gold reward. Empty on
    user prompts: eval reports KL and response lengths only, and says so in one printed line."""
    gold_reward: str = ""
    """"module:function" of an exact reward f(prompts, responses) -> list[float], or None for prompts it does not
    know; scores eval responses and online rollouts (gold_reward in metrics.jsonl) ahead of any reward model. The
    entry points set it to the embedded task's (una_hpc.task.grammar:gold_rewards) when empty."""
    every: int = 0
    """Offline training (online UNA and PPO ignore it): evaluate the live policy every N steps (a multiple of
    trainer.log_every) on data.eval_path and add eval_* keys (una_hpc/trainer/eval_live.py) to that step's
    metrics.jsonl row; 0 = off. Rank 0 evaluates; needs parallel.zero_stage <= 2 and parallel.tp_size=1."""
    num_prompts_during_training: int = 32
    """Held-out prompts per evaluation when eval.every > 0 (the first ones of data.eval_path)."""


@dataclass
class TaskConfig:
    """The embedded default task (used when model.path / data.path are empty)."""

    dir: str = "runs/default"
    """Cache of the base model, tokenizer, dataset and reward model."""
    sft_steps: int = 1000
    """SFT steps for the tiny base model."""
    num_prompts: int = 256
    """Training prompts for the offline dataset."""
    responses_per_prompt: int = 4
    """Sampled responses per prompt, scored by the gold reward."""
    rm_steps: int = 200
    """Reward-model training steps."""
    rm_lr: float = 3e-4
    """Reward-model training learning rate (a fresh score head needs far more than the policy's optim.lr)."""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    task: TaskConfig = field(default_factory=TaskConfig)


def _convert(key: str, value: Any, tp: Any) -> Any:
    """Check/convert `value` against annotation `tp`; raise a one-line ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"config key {key}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"config key {key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "3e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key {key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key {key}: expected a string, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise ConfigError(f"config key {key}: expected a list, got {value!r}")
        return [_convert(key, v, item) for v in value]
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key}: expected a mapping, got {value!r}")
        return {str(k): _convert(f"{key}.{k}", v, val_tp) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"config key {key}: union types are not supported")  # none are used
    raise ConfigError(f"config key {key}: unsupported type {tp}")


def _section_types(section: Any) -> dict[str, Any]:
    return typing.get_type_hints(type(section))


def _set(cfg: Config, dotted: str, value: Any) -> None:
    parts = dotted.split(".", 1)
    sections = [f.name for f in dataclasses.fields(cfg)]
    if parts[0] not in sections:
        raise ConfigError(f"unknown config section {parts[0]!r} in {dotted!r}; valid: {', '.join(sections)}")
    section = getattr(cfg, parts[0])
    if len(parts) == 1:
        if not isinstance(value, dict):
            raise ConfigError(f"config section {dotted}: expected a mapping of its keys")
        for k, v in value.items():
            _set(cfg, f"{dotted}.{k}", v)
        return
    name, rest = parts[1].split(".", 1) if "." in parts[1] else (parts[1], None)
    hints = _section_types(section)
    if name not in hints:
        raise ConfigError(f"unknown config key {parts[0]}.{name}; valid: {', '.join(sorted(hints))}")
    if rest is not None:  # dict entry, e.g. loss.type_weights.score=2
        current = dict(getattr(section, name))
        current[rest] = value
        value, rest_key = current, f"{parts[0]}.{name}"
    else:
        rest_key = dotted
    setattr(section, name, _convert(rest_key, value, hints[name]))


def _set_collecting(cfg: Config, dotted: str, value: Any, problems: list[str]) -> None:
    """`_set`, key by key for a section mapping, appending each one-line problem instead of stopping at the first."""
    if "." not in dotted and isinstance(value, dict) and dotted in {f.name for f in dataclasses.fields(cfg)}:
        for k, v in value.items():
            _set_collecting(cfg, f"{dotted}.{k}", v, problems)
        return
    try:
        _set(cfg, dotted, value)
    except ConfigError as e:
        problems.extend(e.problems)


def _parse_overrides(cfg: Config, overrides: list[str], problems: list[str]) -> None:
    for item in overrides:
        if "=" not in item:
            problems.append(f"override {item!r} is not key.sub=value")
            continue
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set_collecting(cfg, key.strip(), value, problems)


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply `key.sub=value` strings; values are parsed as YAML scalars (1e-5, true, [a, b]). Every unknown key or
    bad value is reported, all at once (ConfigError.problems); the result is not validated (see validate_config)."""
    problems: list[str] = []
    _parse_overrides(cfg, overrides, problems)
    if problems:
        raise ConfigError(problems)
    return cfg


def apply_values(cfg: Config, values: dict[str, Any]) -> Config:
    """Set Python values by key: {"trainer.max_steps": 2, "trainer": {"seed": 1}, "data.path": Path(...)}; the same
    type checks as YAML and overrides (path-like values become strings), every problem reported at once."""
    problems: list[str] = []
    for key, value in values.items():
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        elif isinstance(value, dict):
            value = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in value.items()}
        _set_collecting(cfg, key, value, problems)
    if problems:
        raise ConfigError(problems)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, *, validate: bool = True) -> Config:
    """Defaults <- YAML file <- overrides, then `validate_config` (ConfigError with every problem, one line each;
    ConfigWarning for keys without effect). Unknown keys and bad values are reported all at once too."""
    cfg = Config()
    problems: list[str] = []
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections")
        for section, values in raw.items():
            _set_collecting(cfg, str(section), values, problems)
    _parse_overrides(cfg, overrides or [], problems)
    if problems:  # values that did not parse: range and cross-field rules would only add noise
        raise ConfigError(problems)
    return validate_config(cfg) if validate else cfg


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


# --- Validation: what load_config checks before anything runs (errors vs warnings: see the module docstring) -------

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
    "reward_normalize": ("una_online",),
}
"""loss.<key> -> the loss names whose head reads it; any other loss ignores it (a warning when it is set)."""

_RANGES: tuple[tuple[str, typing.Callable[[Any], bool], str], ...] = (
    ("model.lora_rank", lambda v: v >= 0, ">= 0"),
    ("model.lora_alpha", lambda v: v > 0, "> 0"),
    ("model.lora_dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("data.max_prompt_length", lambda v: v >= 1, ">= 1"),
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
    ("trainer.max_length", lambda v: v >= 2, ">= 2 (one prompt and one response token)"),
    ("trainer.output_dir", lambda v: v != "", "a directory (not empty)"),
    ("trainer.seed", lambda v: v >= 0, ">= 0"),
    ("trainer.log_every", lambda v: v >= 1, ">= 1"),
    ("trainer.save_every", lambda v: v >= 0, ">= 0 (0 = only at the end)"),
    ("trainer.keep_checkpoints", lambda v: v >= 0, ">= 0 (0 = keep all)"),
    ("parallel.zero_stage", lambda v: v in (0, 1, 2, 3), "0, 1, 2 or 3"),
    ("parallel.tp_size", lambda v: v >= 1, ">= 1"),
    ("rollout.prompts_per_step", lambda v: v >= 1, ">= 1"),
    ("rollout.samples_per_prompt", lambda v: v >= 1, ">= 1"),
    ("rollout.max_new_tokens", lambda v: v >= 1, ">= 1"),
    ("rollout.temperature", lambda v: v >= 0, ">= 0 (0 = greedy)"),
    ("rollout.top_p", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("rollout.gpu_memory_utilization", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("eval.num_prompts", lambda v: v >= 1, ">= 1"),
    ("eval.max_new_tokens", lambda v: v >= 1, ">= 1"),
    ("eval.temperature", lambda v: v >= 0, ">= 0 (0 = greedy)"),
    ("eval.every", lambda v: v >= 0, ">= 0 (0 = off)"),
    ("eval.num_prompts_during_training", lambda v: v >= 1, ">= 1"),
    ("task.dir", lambda v: v != "", "a directory (not empty)"),
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


def _show(value: Any) -> str:
    """A value as it would be written in an override (true, 0.5, "", [a, b], {k: v})."""
    if isinstance(value, str):
        return value if value else '""'
    return json.dumps(value)


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
      pairwise/binary/score; loss.desirable_weight + loss.undesirable_weight > 0;
    - trainer.resume and trainer.overwrite not both true; trainer.tensorboard=true only with tensorboard installed;
    - parallel.offload_optimizer needs zero_stage >= 1, parallel.offload_param zero_stage=3; backend=deepspeed with
      trainer.dtype=bfloat16 needs zero_stage >= 1;
    - model.ref_path only for full fine-tuning (lora_rank=0); LoRA needs lora_target_modules;
    - offline losses: a data.view other than auto must be one the head trains on (mixed: loss.name=mixed only);
      eval.every > 0 must be a multiple of trainer.log_every, needs zero_stage <= 2 and tp_size=1, and with your
      own data.path needs data.eval_path;
    - online UNA and PPO: trainer.max_length > rollout.max_new_tokens (room for a prompt), zero_stage <= 2 and
      tp_size=1 (weights are synced unpartitioned into the rollout engine).
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
        if par.zero_stage == 3 or par.tp_size > 1:
            out.append(
                "online runs sync unpartitioned weights into the rollout engine: use parallel.zero_stage "
                "<= 2 and parallel.tp_size=1"
            )
        if ro.reward_fn and ro.reward_model:
            out.append(
                f"rollout.reward_fn={ro.reward_fn} and rollout.reward_model={ro.reward_model}: the explicit "
                "reward comes from one of them; empty the other"
            )
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
            out.append(f"eval.every={ev.every} is ignored by loss.name={name} (offline training only)")
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
    if not d.path and d.format not in ("score", "helpsteer2"):
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


# --- Documentation: every key with its type, value, default and docstring (`una-hpc config`) ------------------------


@functools.lru_cache(maxsize=1)
def _class_docs() -> dict[str, tuple[str, dict[str, str]]]:
    """Class name -> (class docstring, field -> the docstring under it), read from this module's source."""
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    out: dict[str, tuple[str, dict[str, str]]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields: dict[str, str] = {}
        for a, b in zip(node.body, node.body[1:]):
            if (
                isinstance(a, ast.AnnAssign)
                and isinstance(a.target, ast.Name)
                and isinstance(b, ast.Expr)
                and isinstance(b.value, ast.Constant)
                and isinstance(b.value.value, str)
            ):
                fields[a.target.id] = " ".join(b.value.value.split())
        out[node.name] = (" ".join((ast.get_docstring(node) or "").split()), fields)
    return out


def field_docs() -> dict[str, str]:
    """Dotted key -> its field docstring (whitespace collapsed), for every key of Config."""
    docs = _class_docs()
    return {
        f"{sec.name}.{f.name}": docs.get(type(section).__name__, ("", {}))[1].get(f.name, "")
        for sec in dataclasses.fields(Config)
        for section in [getattr(Config(), sec.name)]
        for f in dataclasses.fields(section)
    }


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "|".join(map(str, typing.get_args(tp)))
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    return getattr(tp, "__name__", str(tp))


@dataclass(frozen=True)
class FieldInfo:
    key: str
    """Dotted name, e.g. trainer.batch_size."""
    type: str
    """int, float, bool, str, list[str], dict[str, float], or the choices a|b|c."""
    value: Any
    """The value in the config described."""
    default: Any
    doc: str


def config_fields(cfg: Config | None = None) -> list[FieldInfo]:
    """Every key of `cfg` (defaults when None), in declaration order."""
    cfg = cfg or Config()
    docs, defaults, out = field_docs(), Config(), []
    for sec in dataclasses.fields(cfg):
        section = getattr(cfg, sec.name)
        hints = _section_types(section)
        for f in dataclasses.fields(section):
            key = f"{sec.name}.{f.name}"
            out.append(
                FieldInfo(
                    key,
                    _type_name(hints[f.name]),
                    getattr(section, f.name),
                    getattr(getattr(defaults, sec.name), f.name),
                    docs.get(key, ""),
                )
            )
    return out


def describe(cfg: Config | None = None, width: int = 118) -> str:
    """Every key grouped by section: `key (type) = value`, `[default: x]` where the value differs, then its doc."""
    lines = [
        textwrap.fill(
            "Configuration keys: YAML sections, or `key.sub=value` on the command line. Values are "
            "this config's; [default: x] marks a changed one.",
            width,
        ),
        "",
    ]
    class_docs = _class_docs()
    by_section: dict[str, list[FieldInfo]] = {}
    for info in config_fields(cfg):
        by_section.setdefault(info.key.split(".", 1)[0], []).append(info)
    for sec in dataclasses.fields(Config):
        lines.append(f"[{sec.name}]")
        section_doc = class_docs.get(type(getattr(Config(), sec.name)).__name__, ("", {}))[0]
        if section_doc:
            lines.append(textwrap.fill(section_doc, width, initial_indent="  ", subsequent_indent="  "))
        for info in by_section.get(sec.name, []):
            head = f"  {info.key} ({info.type}) = {_show(info.value)}"
            if info.value != info.default:
                head += f"  [default: {_show(info.default)}]"
            lines.append(head)
            lines.append(
                textwrap.fill(info.doc or "(undocumented)", width, initial_indent="      ", subsequent_indent="      ")
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
