"""`una-hpc eval CONFIG`: evaluate a run's final model on held-out prompts against its base model.

    una-hpc eval configs/quickstart.yaml                     # evaluates trainer.output_dir/final
    una-hpc eval configs/quickstart.yaml eval.num_prompts=128

Gold reward (the embedded task's exact reward) with a 95% interval, win rate against eval.baseline (default: the
base model), KL to the base model; eval.json in trainer.output_dir and a PNG comparing base and aligned.
"""
from __future__ import annotations

from pathlib import Path

from ..config import Config
from .evaluate import evaluate, load_prompts
from .inputs import resolve_inputs
from .plots import plot_runs


def run_eval(cfg: Config, model_dir: Path | None = None) -> dict:
    inputs = resolve_inputs(cfg)
    out = Path(cfg.trainer.output_dir)
    model_dir = model_dir or out / "final"
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: no trained model (run `una-hpc train` with this config first)")
    if inputs.eval_path is None:
        raise ValueError("data.eval_path is empty: give a jsonl of held-out prompts")
    prompts = load_prompts(inputs.eval_path)
    base = Path(cfg.eval.baseline) if cfg.eval.baseline else inputs.model_path
    base_eval = evaluate(base, None, prompts, cfg.eval, out_dir=out / "base_eval", seed=cfg.trainer.seed)
    result = evaluate(model_dir, None, prompts, cfg.eval, baseline=base, reference=inputs.model_path, out_dir=out,
                      seed=cfg.trainer.seed)
    png = plot_runs({"base": base_eval, "aligned": result}, out / "eval.png")
    g, b = result["gold_reward"], base_eval["gold_reward"]
    print(f"{'model':<10}{'gold reward':>14}{'95% CI':>20}")
    for name, r in (("base", b), ("aligned", g)):
        print(f"{name:<10}{r['mean']:>14.4f}{'[%.4f, %.4f]' % tuple(r['ci95']):>20}")
    print(f"win rate vs base: {result['win_rate']['rate']:.3f}   KL(aligned || base): {result['kl']['mean']:.3f}")
    print(f"eval: {out / 'eval.json'}   plot: {png}")
    return result
