"""TRL's DPOTrainer on a conversational pairs file: the peer side of benchmarks/offline_vs_trl.py.

    benchmarks/.venv-trl/bin/python benchmarks/trl_dpo_runner.py --model DIR --data PAIRS.jsonl --out DIR

Runs in TRL's own venv (no una_hpc import). Prints one JSON line: the time of `trainer.train()` and the loss per
step. Everything a user would leave at TRL's defaults stays at them (gradient checkpointing included), except what
the comparison fixes for both sides: batch, steps, length, learning rate, beta, LoRA, fp32, seed, no saving.
benchmarks/gpu_dpo.py runs it on a GPU with --device cuda --bf16 1 --lora-rank 0 (full fine-tuning).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--gradient-checkpointing", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--bf16", type=int, choices=(0, 1), default=0, help="1: bf16 autocast over fp32 weights")
    args = ap.parse_args()

    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    data = load_dataset("json", data_files=args.data, split="train")
    config = DPOConfig(
        output_dir=args.out,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        max_steps=args.steps,
        max_length=args.max_length,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        beta=args.beta,
        gradient_checkpointing=bool(args.gradient_checkpointing),
        use_cpu=args.device == "cpu",
        bf16=bool(args.bf16),
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        dataloader_num_workers=0,
    )
    lora = None  # --lora-rank 0: full fine-tuning (TRL then keeps a frozen copy as the reference)
    if args.lora_rank > 0:
        from peft import LoraConfig  # only LoRA needs peft

        lora = LoraConfig(
            r=args.lora_rank,
            lora_alpha=2 * args.lora_rank,
            lora_dropout=0.0,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            task_type="CAUSAL_LM",
        )
    trainer = DPOTrainer(model=model, args=config, train_dataset=data, processing_class=tok, peft_config=lora)
    setup_s = time.perf_counter() - start
    t0 = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t0
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    print(json.dumps({"setup_s": setup_s, "train_s": train_s, "losses": losses, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
