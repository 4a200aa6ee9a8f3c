"""`make demo` / `una-hpc demo configs/quickstart.yaml`: the embedded default task end to end.

1. the synthetic HelpSteer-style task, a tokenizer and a tiny Llama trained from scratch by SFT (cached in task.dir),
   and an offline dataset of the base model's own samples scored by the exact gold reward;
2. offline UNA-score on that data (configs/quickstart.yaml);
3. evaluation on held-out prompts: base vs aligned gold reward with 95% intervals, win rate, KL; plots.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..config import Config
from . import run_training
from .eval_run import run_eval
from .plots import plot_metrics


def run_demo(cfg: Config) -> dict:
    t0 = time.perf_counter()
    final = run_training(cfg)
    curves = plot_metrics(Path(cfg.trainer.output_dir) / "metrics.jsonl",
                          Path(cfg.trainer.output_dir) / "training.png")
    result = run_eval(cfg, final)
    print(f"training curves: {curves}")
    print(f"demo finished in {(time.perf_counter() - t0) / 60:.1f} min")
    return result
