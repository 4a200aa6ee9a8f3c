"""PNG plots: reward per run (gold or RM score; bars with 95% intervals) and a run's metrics.jsonl curves.

    python -m una_hpc.trainer.plots runs.png base=runs/default/base/eval.json una=runs/quickstart/eval.json
    python -m una_hpc.trainer.plots curve.png runs/quickstart/metrics.jsonl

    .venv/bin/python -m pytest tests/unit/test_evaluate.py -q -k plot

matplotlib with the Agg backend (no display needed).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, out_png: str | Path) -> Path:
    """Lay out, write (creating the folder) and close a figure; its path."""
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _load_eval(run: Mapping | str | Path) -> Mapping:
    if isinstance(run, (str, Path)):
        p = Path(run)
        return json.loads((p / "eval.json" if p.is_dir() else p).read_text())
    return run


def _reward(e: Mapping) -> Mapping:
    return e["reward"] if "reward" in e else e["gold_reward"]  # eval.json files before RM scoring had gold only


def plot_runs(runs: Mapping[str, Mapping | str | Path], out_png: str | Path, title: str | None = None) -> Path:
    """Bar chart of each run's reward mean (gold reward or RM score) with its 95% interval; `runs` maps a label to
    an eval result (the dict `evaluate` returns, its eval.json, or the folder holding it). Win rates are written
    above the bars."""
    if not runs:
        raise ValueError("no runs to plot")
    labels = list(runs)
    evals = [_load_eval(runs[k]) for k in labels]
    gold = all(e.get("reward_source", "gold") == "gold" for e in evals)
    name = "gold reward" if gold else "reward-model score"
    means = [_reward(e)["mean"] for e in evals]
    lo = [m - _reward(e)["ci95"][0] for m, e in zip(means, evals)]
    hi = [_reward(e)["ci95"][1] - m for m, e in zip(means, evals)]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(labels) + 2), 3.6))
    bars = ax.bar(range(len(labels)), means, yerr=[lo, hi], capsize=5, color="#4c72b0")
    for bar, e, top in zip(bars, evals, [m + h for m, h in zip(means, hi)]):
        note = f"{bar.get_height():.3f}"
        if "win_rate" in e:
            note += f"\nwin {e['win_rate']['rate']:.2f}"
        ax.text(bar.get_x() + bar.get_width() / 2, max(top, 0.0), note, ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    if gold:  # gold rewards live in [0, 1]; RM logits have no fixed range
        ax.set_ylim(0, 1.15)
    else:
        ax.margins(y=0.25)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel(name)
    ax.set_title(title or f"{name} on held-out prompts (95% CI)", fontsize=10)
    return _save(fig, out_png)


def read_metrics(path: str | Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_metrics(metrics_jsonl: str | Path, out_png: str | Path, keys: Sequence[str] | None = None) -> Path:
    """One panel per metric against `step` (raw, plus a trailing moving average on longer runs). Default keys:
    `loss`, `eval_kl` and every numeric key naming a reward or score (of any row: eval.every rows included)."""
    rows = read_metrics(metrics_jsonl)
    if not rows:
        raise ValueError(f"{metrics_jsonl}: no metrics rows")
    if keys is None:  # keys of every row: eval_* keys appear only on eval.every steps
        numeric = list(
            dict.fromkeys(
                k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and k != "step" and "_ci_" not in k
            )
        )
        keys = [k for k in numeric if k in ("loss", "eval_kl") or "reward" in k or "score" in k] or numeric[:1]
    fig, axes = plt.subplots(len(keys), 1, figsize=(6, 2.2 * len(keys)), sharex=True, squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        window = max(1, len(ys) // 20)
        ax.plot(xs, ys, lw=0.8, alpha=0.4 if window > 1 else 1.0, color="#4c72b0")
        if window > 1:  # trailing moving average over ~5% of the run
            smooth = [
                sum(ys[max(0, i - window + 1) : i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(ys))
            ]
            ax.plot(xs, smooth, lw=1.6, color="#4c72b0", label=f"mean of {window}")
            ax.legend(fontsize=7, loc="best")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(Path(metrics_jsonl).parent.name or str(metrics_jsonl), fontsize=10)
    return _save(fig, out_png)


if __name__ == "__main__":
    _out, *_args = sys.argv[1:]
    if len(_args) == 1 and _args[0].endswith(".jsonl"):
        print(plot_metrics(_args[0], _out))
    else:
        print(plot_runs(dict(a.split("=", 1) for a in _args), _out))
