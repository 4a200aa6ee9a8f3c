"""`una-hpc eval CONFIG`: evaluate a run's final model on held-out prompts against its base model.

    una-hpc eval configs/quickstart.yaml                     # the embedded task: gold reward
    una-hpc eval my.yaml model.path=/models/base data.eval_path=prompts.jsonl eval.reward_model=/models/rm

Evaluates trainer.output_dir/final on the first eval.num_prompts prompts of data.eval_path (any table with a `prompt`
column; prompts over data.max_prompt_length tokens are dropped, with a count): reward with a 95% interval for the
base model (eval.baseline, default model.path) and the aligned one, win rate of aligned against base (ties count
half), KL(aligned || reference) with the reference model.ref_path or else model.path. The reward is the exact gold
reward of eval.gold_reward (the embedded task's) on prompts it knows, eval.reward_model's score on others; with
neither, one printed line says so and KL and response lengths are reported alone. Writes eval.json (aligned),
base_eval/eval.json and, with a reward, eval.png into trainer.output_dir. Models run on the first GPU when there is
one, in fp32.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..models.policy import load_tokenizer
from ..parallel.distributed import device_for
from ..rollout.reward import RewardModel
from .evaluate import evaluate, fit_prompts, gold_function, pick_scorer, read_eval_prompts
from .inputs import resolve_inputs
from .plots import plot_runs


def run_eval(cfg: Config, model_dir: Path | None = None) -> dict:
    # need_data=False: eval reads no training data (the entry point filled the embedded task's paths, if any).
    inputs = resolve_inputs(cfg, need_data=False)
    if inputs.eval_path is None:
        raise ValueError("data.eval_path is empty: give a file of held-out prompts (a `prompt` column)")
    model_path, eval_path = inputs.model_path, inputs.eval_path
    out = Path(cfg.trainer.output_dir)
    model_dir = model_dir or out / "final"
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: no trained model (run `una-hpc train` with this config first)")
    device = device_for(0)
    tokenizer = load_tokenizer(model_dir)
    prompts, dropped = fit_prompts(
        tokenizer, read_eval_prompts(eval_path, inputs.eval_split), cfg.data.max_prompt_length
    )
    if dropped:
        print(f"eval: dropped {dropped} prompts over data.max_prompt_length={cfg.data.max_prompt_length} tokens")
    prompts = prompts[: cfg.eval.num_prompts]
    rm = RewardModel.from_pretrained(cfg.eval.reward_model, device=device) if cfg.eval.reward_model else None
    scorer = pick_scorer(prompts, rm, gold=gold_function(cfg.eval))
    if scorer is None:
        print("eval: prompts outside the embedded task and no eval.reward_model: reporting KL and lengths only")
    base = Path(cfg.eval.baseline) if cfg.eval.baseline else model_path
    reference = Path(cfg.model.ref_path) if cfg.model.ref_path else model_path
    common = dict(reward_model=rm, seed=cfg.trainer.seed, device=device)
    base_eval = evaluate(base, tokenizer, prompts, cfg.eval, out_dir=out / "base_eval", **common)
    # The baseline's responses are base_eval's: same prompts, settings and seed, so no second generation.
    result = evaluate(
        model_dir,
        tokenizer,
        prompts,
        cfg.eval,
        baseline=[s["response"] for s in base_eval["samples"]],
        baseline_name=str(base),
        reference=reference,
        out_dir=out,
        **common,
    )
    _print_table(base_eval, result)
    if scorer is not None:
        print(f"plot: {plot_runs({'base': base_eval, 'aligned': result}, out / 'eval.png')}")
    print(f"eval: {out / 'eval.json'}")
    return result


def _print_table(base_eval: dict, result: dict) -> None:
    source = {"gold": "gold reward", "reward_model": "RM score"}.get(result["reward_source"])
    if source is not None:
        print(f"{'model':<10}{source:>14}{'95% CI':>20}{'tokens':>10}")
        for name, r in (("base", base_eval), ("aligned", result)):
            g = r["reward"]
            print(
                f"{name:<10}{g['mean']:>14.4f}{'[{:.4f}, {:.4f}]'.format(*g['ci95']):>20}"
                f"{r['mean_response_tokens']:>10.1f}"
            )
        print(
            f"win rate vs base: {result['win_rate']['rate']:.3f} (ties count half)   "
            f"KL(aligned || reference): {result['kl']['mean']:.3f} +- {result['kl']['stderr']:.3f}"
        )
    else:
        print(f"{'model':<10}{'tokens':>10}{'eos rate':>10}")
        for name, r in (("base", base_eval), ("aligned", result)):
            print(f"{name:<10}{r['mean_response_tokens']:>10.1f}{r['eos_rate']:>10.3f}")
        print(f"KL(aligned || reference): {result['kl']['mean']:.3f} +- {result['kl']['stderr']:.3f}")
