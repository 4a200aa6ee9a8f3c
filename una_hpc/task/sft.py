"""A small supervised fine-tuning loop: trains the embedded default's tiny base model from scratch.

    python -m una_hpc.task.build                # runs this loop as step (b) of the embedded default task
    .venv/bin/python -m pytest tests/unit/test_evaluate.py -q -k sft

Plain torch AdamW on an HF causal LM; completion-only loss (prompt and padding labels are IGNORE_INDEX); right-padded
batches; warmup then cosine decay; seeded data order. This is the readable path for the base model, not the
fused-kernel UNA trainer.

Tokenization contract (the same one generation uses): the prompt is the chat template rendered with
`add_generation_prompt=True` and tokenized on its own; the completion is the response tokenized on its own followed
by EOS; the sequence is their concatenation. Generating from the prompt ids therefore continues exactly where
training did.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..feedback import IGNORE_INDEX


@dataclass
class SFTConfig:
    steps: int = 300
    """Optimizer steps."""
    batch_size: int = 32
    """Sequences per step."""
    lr: float = 3e-3
    """Peak AdamW learning rate (a from-scratch tiny model wants a large one)."""
    warmup_steps: int = 20
    """Linear warmup, then cosine decay to 10% of the peak."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Global gradient-norm clip; 0 disables."""
    max_length: int = 128
    """Token limit per sequence (the completion is cut, the prompt kept)."""
    seed: int = 0
    """Seeds the data order."""
    log_every: int = 50
    """Steps between progress lines / metrics rows."""


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Token ids of a user prompt rendered with the chat template, ending at the assistant's turn."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_completion(tokenizer: PreTrainedTokenizerBase, response: str) -> list[int]:
    """Token ids of a response followed by EOS."""
    return list(tokenizer(response, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]


def encode_example(
    tokenizer: PreTrainedTokenizerBase, prompt: str, response: str, max_length: int
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) with labels IGNORE_INDEX on the prompt; HF shifts labels inside the model."""
    p, c = encode_prompt(tokenizer, prompt), encode_completion(tokenizer, response)
    c = c[: max(0, max_length - len(p))]
    return p + c, [IGNORE_INDEX] * len(p) + c


def collate(examples: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Tensor]:
    """Right-pad to the longest example: input_ids, attention_mask, labels."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def lr_factor(step: int, cfg: SFTConfig) -> float:
    """Multiplier of the peak lr at 0-based `step`: linear warmup, cosine decay to 0.1."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress)))


def _batches(n: int, cfg: SFTConfig) -> list[list[int]]:
    """Example indices per step: shuffled epochs, reshuffled each time the data runs out."""
    rng = random.Random(cfg.seed)
    order: list[int] = []
    out = []
    for _ in range(cfg.steps):
        if len(order) < cfg.batch_size:
            epoch = list(range(n))
            rng.shuffle(epoch)
            order += epoch
        out.append(order[: cfg.batch_size])
        order = order[cfg.batch_size :]
    return out


def train_sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[str, str]],
    cfg: SFTConfig,
    *,
    metrics_path: str | Path | None = None,
    log: Callable[[str], None] | None = print,
) -> list[dict]:
    """Train `model` in place on (prompt, response) pairs; returns the logged metrics rows."""
    if not pairs:
        raise ValueError("SFT needs at least one (prompt, response) pair")
    encoded = [encode_example(tokenizer, p, r, cfg.max_length) for p, r in pairs]
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    rows: list[dict] = []
    sink = open(metrics_path, "w") if metrics_path is not None else None
    t0, loss_sum, tokens, n_loss = time.perf_counter(), 0.0, 0, 0
    try:
        for step, idx in enumerate(_batches(len(encoded), cfg)):
            batch = collate([encoded[i] for i in idx], tokenizer.pad_token_id)
            loss = model(**batch).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            sched.step()
            loss_sum += float(loss.detach())
            n_loss += 1
            tokens += int(batch["attention_mask"].sum())
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                elapsed = time.perf_counter() - t0
                row = {
                    "step": step + 1,
                    "loss": loss_sum / n_loss,
                    "lr": sched.get_last_lr()[0],
                    "tokens_per_s": tokens / elapsed,
                    "elapsed_s": elapsed,
                }
                rows.append(row)
                if sink is not None:
                    sink.write(json.dumps(row) + "\n")
                    sink.flush()
                if log is not None:
                    log(f"  sft step {step + 1}/{cfg.steps}  loss {row['loss']:.3f}  {elapsed:.0f}s")
                loss_sum, n_loss = 0.0, 0
    finally:
        if sink is not None:
            sink.close()
    model.eval()
    return rows
