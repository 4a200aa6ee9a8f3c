"""The configuration schema: one dataclass per section, every field with its docstring.

Loaded by una_hpc/config.py (YAML + overrides), validated by una_hpc/config_checks.py, documented by
una_hpc/config_docs.py (which reads the field docstrings from this file's source). Import the public names
from una_hpc.config.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

DataFormat = Literal["auto", "pairwise", "binary", "score", "helpsteer2", "conversational", "text", "prompt"]
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
    format: DataFormat = "auto"
    """Row format; column names follow TRL (see una_hpc/data/formats.py). auto: the TRL dataset type is detected
    from the columns and the value shapes (una_hpc/data/detect.py); `prompt` is prompt-only rows (online runs)."""
    eval_split: str = ""
    """Held-out split (e.g. `test_prefs`) for `eval` and eval.every: of data.eval_path when set, else of data.path
    itself (a dir of data files named by split, a save_to_disk DatasetDict or a Hub id). Empty: `train` of
    data.eval_path."""
    eval_path: str = ""
    """Held-out prompts for `eval`. Empty: the embedded task's held-out split."""
    view: Literal["auto", "pairwise", "binary", "score", "mixed"] = "auto"
    """Which feedback view to derive from the data; auto follows loss.name. On preference rows with score_chosen /
    score_rejected: score = both completions with their scores, mixed = each row's pair and both scores."""
    attribute_weights: dict[str, float] = field(
        default_factory=lambda: {"helpfulness": 0.65, "correctness": 0.8, "coherence": 0.45}
    )
    """HelpSteer2 attribute weights for the combined score (0-4 attributes mapped to [0,1], renormalized)."""
    binary_threshold: float = 0.5
    """Scored -> binary view: score >= threshold is desirable."""
    score_range: list[float] = field(default_factory=list)
    """[low, high] of the raw scores (`score`, `score_chosen`/`score_rejected`), mapped linearly to [0, 1]; a
    score outside it is a row error. Empty: [0, 1] for `score`; for score_chosen/score_rejected [0, 1] when every
    score lies in it, else the data's own min and max (UltraFeedback: 1-10)."""
    max_prompt_length: int = 256
    """Prompt token limit (paper: 512)."""
    truncation: Literal["error", "drop", "truncate_prompt"] = "truncate_prompt"
    """What to do with a prompt over max_prompt_length: report it, drop the row, or keep its last tokens."""
    packing: bool = True
    """Pack sequences into rows of data.pack_length (pair-atomic, block-diagonal attention). Not wired yet: the
    offline and online loops always pack and PPO never does, so false has no effect (a warning says so)."""
    pack_length: int = 0
    """Tokens per packed row; 0 = trainer.max_length. Longer rows hold more sequences (less padding when sequences
    are shorter than max_length, e.g. two or three chat turns of 80 tokens per 256-token row) at a quadratic
    attention cost per row under sdpa; with flash_attention_2 rows are flattened anyway. Must be >= max_length."""
    share_prompt: bool = True
    """Sequences with one prompt keep one copy of it in a packed row (a pair's two; an online step's samples of a
    prompt); each attends to it and never to the others, so log-probs are those of separate copies, in P - 1 fewer
    tokens per extra sequence. Off by itself, with a printed line, under flash_attention_2 and for sliding windows
    shorter than trainer.max_length."""
    ref_cache: bool = True
    """Compute reference logps once and cache them by dataset fingerprint and reference-model hash."""
    cache_dir: str = "runs/.cache"
    """Where the reference-logp cache lives (shared across runs and resumes)."""

    def row_length(self, max_length: int) -> int:
        """Tokens per packed row for sequences of at most `max_length` tokens (pack_length, 0 = max_length)."""
        return self.pack_length or max_length


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
    online_logratio: Literal["reference", "rollout"] = "reference"
    """Online UNA: what the implicit reward's log-ratio is taken against. reference: log pi_theta / pi_ref (the
    paper's form); rollout: against the policy that sampled the batch (the authors' public code), so each step's
    loss starts at sigmoid(0) = 0.5 and its gradient is 2 (0.5 - target) beta/4 grad log pi, a REINFORCE-like update
    with 0.5 as baseline; the reference then only serves the KL metrics."""
    desirable_weight: float = 1.0
    """KTO lambda_D."""
    undesirable_weight: float = 1.0
    """KTO lambda_U."""
    type_weights: dict[str, float] = field(default_factory=lambda: {"pairwise": 1.0, "binary": 1.0, "score": 1.0})
    """Mixed head: weight of each feedback type's mean loss."""
    reward_normalize: Literal["sigmoid", "minmax", "zscore", "group", "group_std", "none"] = "sigmoid"
    """Online UNA: map the explicit rewards (reward-model logits or rollout.reward_fn values) to the [0, 1] target
    that sigmoid(beta * logratio) regresses onto. sigmoid: sigmoid(reward); minmax / zscore: over the step's
    rollouts; group / group_std (GRPO-style, needs rollout.samples_per_prompt >= 2): per prompt, the
    advantage a = reward - mean of the prompt's samples (group_std: divided by their sample std, 0 when they are all
    equal), target sigmoid(a): 0.5 for an average sample, above for a better one; `none` takes them as they are (a
    reward function that already returns [0, 1]; other values are an error). PPO reads group / group_std only (its
    sequence rewards become the unsquashed advantages a) and ignores the rest (raw rewards; ppo.reward_whiten
    standardizes them)."""


@dataclass
class PPOConfig:
    """PPO as TRL / OpenRLHF run it (docs/design.md, "PPO's KL coefficient"): KL-shaped per-token rewards, GAE,
    clipped policy and value losses, a critic started from the reward model."""

    kl_coef: float = 0.05
    """beta, the KL coefficient, in the unit ppo.kl_coef_unit names (the paper's RLHF beta = 10 is set here); with
    ppo.kl_target > 0 its starting value."""
    kl_coef_unit: Literal["token", "sequence"] = "token"
    """What beta multiplies. token: every response token's reward carries -beta * kl_t, so a response pays
    beta * sum_t kl_t = beta * KL(pi || pi_ref) of the whole sequence (TRL, OpenRLHF; the RLHF objective's beta).
    sequence: a response pays beta * mean_t kl_t (each token -beta * kl_t / response length), so beta does not grow
    with the response length."""
    kl_target: float = 0.0
    """Adaptive KL controller (Ziegler et al. 2019, TRL's AdaptiveKLController): > 0 moves beta after every
    rollout batch toward this KL, measured in the unit of kl_coef_unit (token: nats per response, summed; sequence:
    nats per token), over all ranks; 0 = beta fixed."""
    kl_horizon: int = 10000
    """Adaptive KL horizon in rollouts: beta *= 1 + clip(KL / kl_target - 1, -0.2, 0.2) * rollouts / kl_horizon."""
    critic_init: Literal["reward_model", "policy"] = "reward_model"
    """What the critic starts from: reward_model (its backbone, and its score head as the value head; as
    InstructGPT, TRL, OpenRLHF; it must share the policy's tokenizer; with rollout.reward_fn there is no reward model
    and the policy is used, said in one line) or policy (its backbone, a fresh small value head)."""
    critic_lr: float = 0.0
    """The critic's peak learning rate (same schedule as the policy's); 0 = optim.lr."""
    num_minibatches: int = 1
    """Optimizer steps per PPO epoch: each epoch shuffles a rank's rollouts and splits them into this many
    minibatches, one step each (so ppo.epochs * num_minibatches steps per rollout batch). Must divide a rank's
    rollouts (rollout.prompts_per_step / ranks * rollout.samples_per_prompt)."""
    reward_whiten: bool = False
    """Whiten the rollout batch's sequence rewards (reward-model scores) to mean 0, std 1 over a rank's rollouts
    before clipping and KL shaping (beta then weighs KL against standardized rewards)."""
    reward_clip: float = 0.0
    """Clip sequence rewards (after whitening) to [-reward_clip, reward_clip]; 0 = no clipping."""
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
    max_time_s: float = 0.0
    """Wall-clock budget of the training loop in seconds; 0 = none. The run ends after the first optimizer step that
    finishes past it, as if max_steps were that step (last checkpoint, final export), every rank at the same step.
    Counted from the loop's start in this process: a resumed run gets a fresh budget. For equal-time comparisons
    (una-hpc bench replicate runs PPO and online UNA on the same budget)."""
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
    """How many step checkpoints to keep (the newest); 0 = keep all. Older ones are deleted only after the new one
    is complete."""
    max_bad_steps: int = 3
    """A step whose loss or global gradient norm is NaN/inf is skipped (weights, optimizer and LR schedule untouched,
    counted as skipped_steps in metrics.jsonl); this many skipped steps in a row stop the run with one line naming
    the last good checkpoint. 0 = never stop."""
    step_hook: str = ""
    """"module:function" called on every rank as fn(step, rank, batches) with the step's micro-batches before their
    forward, free to change them in place (debugging; the fault-injection tests use it). "" = none."""
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
    top_k: int = 0
    """Sample among the k most likely tokens only (both engines); 0 or -1 = off."""
    stop: list[str] = field(default_factory=list)
    """Stop strings: a completion is cut after the token whose text completes the first of them and counts as
    finished, like EOS (both engines, one rule: una_hpc/rollout/stops.py). Empty: EOS and max_new_tokens only."""
    truncated: Literal["keep", "penalty", "drop"] = "keep"
    """Completions that hit max_new_tokens without EOS or a stop string: keep them as scored; penalty: subtract
    rollout.truncated_penalty from their explicit reward (TRL's missing_eos_penalty), before loss.reward_normalize
    (with `none`, the result is clamped at 0); drop: leave them out of the update (online UNA only; a rank whose
    completions are all truncated keeps them, there would be nothing to train on). metrics.jsonl counts them
    (`truncated`) either way."""
    truncated_penalty: float = 1.0
    """What rollout.truncated=penalty subtracts from a truncated completion's explicit reward (RM logit or
    reward_fn value), >= 0."""
    eval_every: int = 0
    """Online UNA and PPO: every N steps (a multiple of trainer.log_every) generate one response per held-out prompt
    (data.eval_path, the embedded task's held-out prompts by default) with the rollout engine and log eval_reward,
    eval_reward_ci_low/high (95% interval), eval_response_tokens and eval_truncated into that step's metrics.jsonl
    row. The reward: the eval.gold_reward hook where it knows the prompts (the embedded task), else eval.reward_model,
    else rollout.reward_model / reward_fn. Generation: eval.max_new_tokens, eval.temperature (0 = greedy), the
    rollout's stop strings, seeded by trainer.seed. Rank 0 evaluates. 0 = off."""
    eval_prompts: int = 32
    """Held-out prompts per rollout.eval_every evaluation (the first ones that fit)."""
    gpu_memory_utilization: float = 0.3
    """vLLM memory fraction when colocated with training."""
    sync_bucket_mb: float = 256.0
    """ZeRO-3 weight sync: parameters are gathered and pushed into the engine in buckets of at most this many MB
    of full (unpartitioned) weights; a single tensor larger than that is a bucket of its own."""
    check_sync_every: int = 0
    """Every N steps, after the weight sync, compare the engine's log-probs of a short greedy probe with the
    trainer's and stop with one line when they drift (0: never)."""
    check_sync_tolerance: float = 1e-3
    """Largest allowed |engine - trainer| log-prob per probe token (nats) for rollout.check_sync_every (fp32
    measured ~3e-7; bf16 engines and trainers differ by rounding, so raise it there; bf16 is unmeasured here)."""
    engine_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Level of vLLM's log file (OUTPUT_DIR/vllm.log, vllm.rankN.log on other ranks); the console shows only
    vLLM's warnings and errors that matter."""
    sleep_level: int = 0
    """vLLM sleep mode while the trainer runs (CUDA only; a logged no-op on CPU): 1 = KV cache freed and weights
    offloaded to host memory, 2 = both freed (the weight sync refills them); 0 = off."""
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
    """Cache of built tasks: each under dir/seed-<task.seed>/, each step in a folder named by its sizes (e.g.
    base-sft1000, data-sft1000-256x4), so no build ever overwrites another."""
    seed: int = 42
    """Seeds the task (prompts, tokenizer, SFT of the base model, sampled data, reward model); separate from
    trainer.seed, so runs with different training seeds share one base model and one dataset."""
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


def _section_types(section: Any) -> dict[str, Any]:
    return typing.get_type_hints(type(section))


def _show(value: Any) -> str:
    """A value as it would be written in an override (true, 0.5, "", [a, b], {k: v})."""
    if isinstance(value, str):
        return value if value else '""'
    return json.dumps(value)
