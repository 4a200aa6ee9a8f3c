"""Typed configuration: one dataclass per concern, YAML files and `key.sub=value` overrides.

    cfg = load_config("configs/quickstart.yaml", ["loss.beta=0.1", "trainer.max_steps=20"])

Every field carries a docstring. An unknown key or a wrongly typed value raises ConfigError with one line that
names the key and what is valid; nothing else in the package parses configuration.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

DataFormat = Literal["pairwise", "binary", "score", "helpsteer2", "conversational", "text"]
LossName = Literal["dpo", "kto", "una_binary", "una_score", "mixed", "una_online", "ppo"]


class ConfigError(ValueError):
    """A one-line configuration problem (unknown key, bad type, bad choice)."""


@dataclass
class ModelConfig:
    path: str = ""
    """HF model directory or Hub id (AutoModelForCausalLM; Hub ids resolve through the local Hub cache, which
    HF_HUB_OFFLINE=1 restricts to what is cached). Empty: the embedded default tiny Llama, built on first use."""
    ref_path: str = ""
    """Reference model directory for full fine-tuning. Empty: a frozen copy of `path` (LoRA: adapter disabled)."""
    lora_rank: int = 0
    """LoRA rank; 0 = full fine-tuning. The paper uses r=32."""
    lora_alpha: int = 16
    """LoRA scaling numerator (scale = alpha / rank)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input."""
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
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
        default_factory=lambda: {"helpfulness": 0.65, "correctness": 0.8, "coherence": 0.45})
    """HelpSteer2 attribute weights for the combined score (0-4 attributes mapped to [0,1], renormalized)."""
    binary_threshold: float = 0.5
    """Scored -> binary view: score >= threshold is desirable."""
    max_prompt_length: int = 256
    """Prompt token limit (paper: 512)."""
    truncation: Literal["error", "drop", "truncate_prompt"] = "truncate_prompt"
    """What to do with a prompt over max_prompt_length: report it, drop the row, or keep its last tokens."""
    packing: bool = True
    """Pack sequences into rows of trainer.max_length (pair-atomic, block-diagonal attention)."""
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
    type_weights: dict[str, float] = field(
        default_factory=lambda: {"pairwise": 1.0, "binary": 1.0, "score": 1.0})
    """Mixed head: weight of each feedback type's mean loss."""
    reward_normalize: Literal["sigmoid", "minmax", "zscore"] = "sigmoid"
    """Online UNA: map reward-model logits to [0,1]."""


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
    kl_estimator: Literal["k1", "k2", "k3", "abs"] = "k1"
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
    """Examples per optimizer step (a pair is one example)."""
    micro_batch_size: int = 0
    """Examples per forward/backward; 0 = batch_size (no accumulation)."""
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
    """How many step checkpoints to keep."""
    resume: bool = False
    """Continue from the latest checkpoint in output_dir (a fresh start when it holds none)."""
    overwrite: bool = False
    """Let a fresh run (resume=false) replace the checkpoints, final model and metrics an earlier run left in
    output_dir. Off: such a directory stops the run with one line before anything is loaded or written."""
    progress: bool = True
    """Show a progress bar (tokens/s, ETA, loss)."""
    tensorboard: bool = True
    """Also log to TensorBoard when it is installed."""


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
    """Reward model dir (AutoModelForSequenceClassification). Empty: the embedded default's RM."""


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


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply `key.sub=value` strings; values are parsed as YAML scalars (1e-5, true, [a, b])."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set(cfg, key.strip(), value)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file <- overrides."""
    cfg = Config()
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
            _set(cfg, str(section), values)
    return apply_overrides(cfg, overrides or [])


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
