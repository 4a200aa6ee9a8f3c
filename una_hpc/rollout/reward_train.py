"""Train a reward model on scored (prompt, response, score in [0, 1]) rows; save an HF sequence-classification dir.

    path = train_reward_model("runs/default/base", rows, "runs/default/reward_model", steps=200, lr=1e-4, seed=0)
    path = train_rm_from_config(load_config("configs/quickstart.yaml", ["data.path=hs2.jsonl", "model.path=base"]))

- The model is `AutoModelForSequenceClassification(num_labels=1)` built from the base model dir's config: the
  transformer body is initialised from the base (causal LM) weights, the `score` head is fresh (seeded), and
  `pad_token_id` is set from the tokenizer. The saved dir (weights, config, tokenizer with its chat template,
  reward_model.json with the training summary) loads with AutoModelForSequenceClassification / RewardModel.
- Objective: MSE between sigmoid(logit) and the score. Chosen over Bradley-Terry because the inputs are absolute
  scores (HelpSteer2 attributes, graded responses), not same-prompt pairs, so every row is used and none has to be
  paired; and because σ(RM logit) then is a calibrated [0, 1] score, exactly the explicit reward that online UNA
  regresses σ(implicit reward) onto (loss.reward_normalize = sigmoid, docs/design.md).
- Pairs are encoded like the trainer and the policy see them (una_hpc.rollout.reward.encode_pair, i.e. the data
  layer's encoders); batches are sampled without replacement per epoch from a seeded generator; AdamW, constant
  lr, gradient clipping at 1.0. The caller's random state is left untouched.
- `train_rm_from_config` reads cfg.data through the data layer (una_hpc.data.load_validated + to_examples with the
  "score" view): any file type and format it reads that carries scores (score, helpsteer2 with
  cfg.data.attribute_weights, ...), with its one-line DataError problems for bad rows.

Tested by: .venv/bin/python -m pytest tests/unit/test_reward_model.py -q
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification

from ..config import Config, DataConfig
from ..data import load_validated, to_examples
from ..data.formats import Prompt
from ..models.policy import load_tokenizer
from .reward import encode_texts, sequence_logits

log = logging.getLogger(__name__)
META_FILE = "reward_model.json"


@dataclass(frozen=True)
class ScoredText:
    """One training row: a response to a prompt and its score in [0, 1]."""

    prompt: Prompt
    response: str
    score: float


def _as_rows(rows: Iterable[ScoredText | tuple[Prompt, str, float]]) -> list[ScoredText]:
    out = [r if isinstance(r, ScoredText) else ScoredText(*r) for r in rows]
    for i, r in enumerate(out, 1):
        if not isinstance(r.response, str) or not math.isfinite(float(r.score)) or not 0 <= float(r.score) <= 1:
            raise ValueError(
                f"reward-model row {i}: score must be a number in [0, 1] and response a string, got score={r.score!r}"
            )
    if not out:
        raise ValueError("reward-model training needs at least one row")
    return out


def train_reward_model(
    base_model_dir: str | Path,
    rows: Iterable[ScoredText | tuple[Prompt, str, float]],
    out_dir: str | Path,
    steps: int = 200,
    lr: float = 1e-4,
    seed: int = 0,
    *,
    batch_size: int = 16,
    max_length: int = 256,
    device: str | torch.device = "cpu",
) -> Path:
    """Fit sigmoid(RM(prompt, response)) to the scores by MSE for `steps` steps; returns the saved dir."""
    base = Path(base_model_dir)
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"{base}: not an HF model directory (no config.json)")
    if steps < 1 or lr <= 0 or batch_size < 1:
        raise ValueError(
            f"reward-model training needs steps >= 1, lr > 0, batch_size >= 1 (got {steps}, {lr}, {batch_size})"
        )
    data = _as_rows(rows)
    tok = load_tokenizer(base)
    encoded = encode_texts(tok, [r.prompt for r in data], [r.response for r in data])
    targets = torch.tensor([float(r.score) for r in data])
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the fresh score head's init
        model = AutoModelForSequenceClassification.from_pretrained(
            str(base), num_labels=1, pad_token_id=tok.pad_token_id, dtype=torch.float32
        ).to(device)
    model.config.pad_token_id = tok.pad_token_id
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    order, pos, losses = torch.randperm(len(data), generator=gen), 0, []
    for _ in range(steps):
        if pos + min(batch_size, len(data)) > len(data):
            order, pos = torch.randperm(len(data), generator=gen), 0
        idx = order[pos : pos + batch_size].tolist()
        pos += len(idx)
        logits = sequence_logits(model, [encoded[i] for i in idx], tok.pad_token_id, max_length)
        loss = torch.nn.functional.mse_loss(torch.sigmoid(logits), targets[idx].to(logits.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.detach().item())
    seconds = time.perf_counter() - t0
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    tail = losses[-max(1, min(10, steps)) :]
    meta = {
        "base_model": str(base),
        "objective": "mse(sigmoid(logit), score)",
        "rows": len(data),
        "steps": steps,
        "lr": lr,
        "seed": seed,
        "batch_size": batch_size,
        "max_length": max_length,
        "final_loss": sum(tail) / len(tail),
        "first_loss": losses[0],
        "seconds": round(seconds, 2),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    log.info(
        "reward model: %d steps in %.1f s, loss %.4f -> %.4f, saved to %s",
        steps,
        seconds,
        losses[0],
        meta["final_loss"],
        out,
    )
    return out


def load_scored_rows(data_cfg: DataConfig) -> list[ScoredText]:
    """The score view of data_cfg.path as ScoredText rows (DataError, one line per problem, on bad data)."""
    ds = load_validated(data_cfg)
    examples = to_examples(ds, data_cfg.format, "score", data_cfg, data_cfg.path)
    return [ScoredText(e.prompt, e.completions[0], e.target) for e in examples]


def train_rm_from_config(cfg: Config) -> Path:
    """`una-hpc train-rm CONFIG`: base = model.path, data = cfg.data (its score view), steps = task.rm_steps,
    lr = task.rm_lr, batch = trainer.batch_size, max_length = trainer.max_length, seed = trainer.seed; saved to
    rollout.reward_model, or <trainer.output_dir>/reward_model when that is empty."""
    if not cfg.model.path:
        raise ValueError("train-rm needs model.path: the base model dir the reward model starts from")
    if not cfg.data.path:
        raise ValueError("train-rm needs data.path: a scored dataset (e.g. format score or helpsteer2)")
    rows = load_scored_rows(cfg.data)
    out = Path(cfg.rollout.reward_model) if cfg.rollout.reward_model else Path(cfg.trainer.output_dir) / "reward_model"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return train_reward_model(
        cfg.model.path,
        rows,
        out,
        steps=cfg.task.rm_steps,
        lr=cfg.task.rm_lr,
        seed=cfg.trainer.seed,
        batch_size=cfg.trainer.batch_size,
        max_length=cfg.trainer.max_length,
        device=device,
    )
