"""`make demo` / `una-hpc demo configs/quickstart.yaml`: the embedded default task end to end.

    .venv/bin/python -m pytest tests/integration/test_demo.py -q

1. the synthetic HelpSteer-style task, a tokenizer and a tiny Llama trained from scratch by SFT (cached in task.dir),
   and an offline dataset of the base model's own samples scored by the exact gold reward (`fill_defaults`);
2. offline UNA-score on that data (configs/quickstart.yaml), through the trainer's loop;
3. evaluation on held-out prompts: base vs aligned gold reward with 95% intervals, win rate, KL; plots.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..config import Config
from ..trainer import run_training
from ..trainer.eval_run import run_eval
from ..trainer.plots import plot_metrics
from .defaults import fill_defaults


def run_demo(cfg: Config) -> dict:
    t0 = time.perf_counter()
    cfg = fill_defaults(cfg)  # idempotent: the CLI may have filled it already
    final = run_training(cfg)
    curves = plot_metrics(Path(cfg.trainer.output_dir) / "metrics.jsonl", Path(cfg.trainer.output_dir) / "training.png")
    result = run_eval(cfg, final)
    print(f"training curves: {curves}")
    print(f"demo finished in {(time.perf_counter() - t0) / 60:.1f} min")
    return result
