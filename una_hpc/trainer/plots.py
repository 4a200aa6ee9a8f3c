"""PNG plots: gold reward per run (bars with 95% intervals) and a run's metrics.jsonl curves.

    python -m una_hpc.trainer.plots runs.png base=runs/default/base/eval.json una=runs/quickstart/eval.json
    python -m una_hpc.trainer.plots curve.png runs/quickstart/metrics.jsonl

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


def _load_eval(run: Mapping | str | Path) -> Mapping:
    if isinstance(run, (str, Path)):
        p = Path(run)
        return json.loads((p / "eval.json" if p.is_dir() else p).read_text())
    return run


def plot_runs(runs: Mapping[str, Mapping | str | Path], out_png: str | Path,
              title: str = "gold reward on held-out prompts (95% CI)") -> Path:
    """Bar chart of each run's gold-reward mean with its 95% interval; `runs` maps a label to an eval result
    (the dict `evaluate` returns, its eval.json, or the folder holding it). Win rates are written on the bars."""
    if not runs:
        raise ValueError("no runs to plot")
    labels = list(runs)
    evals = [_load_eval(runs[k]) for k in labels]
    means = [e["gold_reward"]["mean"] for e in evals]
    lo = [m - e["gold_reward"]["ci95"][0] for m, e in zip(means, evals)]
    hi = [e["gold_reward"]["ci95"][1] - m for m, e in zip(means, evals)]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(labels) + 2), 3.6))
    bars = ax.bar(range(len(labels)), means, yerr=[lo, hi], capsize=5, color="#4c72b0")
    for bar, e in zip(bars, evals):
        note = f"{bar.get_height():.3f}"
        if "win_rate" in e:
            note += f"\nwin {e['win_rate']['rate']:.2f}"
        ax.text(bar.get_x() + bar.get_width() / 2, 0.02, note, ha="center", va="bottom", color="white", fontsize=8)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("gold reward")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def read_metrics(path: str | Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_metrics(metrics_jsonl: str | Path, out_png: str | Path, keys: Sequence[str] | None = None) -> Path:
    """One panel per metric against `step` (raw, plus a trailing moving average on longer runs). Default keys:
    `loss` and every numeric key naming a reward or score."""
    rows = read_metrics(metrics_jsonl)
    if not rows:
        raise ValueError(f"{metrics_jsonl}: no metrics rows")
    if keys is None:
        numeric = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and k != "step"]
        keys = [k for k in numeric if k == "loss" or "reward" in k or "score" in k] or numeric[:1]
    fig, axes = plt.subplots(len(keys), 1, figsize=(6, 2.2 * len(keys)), sharex=True, squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        window = max(1, len(ys) // 20)
        ax.plot(xs, ys, lw=0.8, alpha=0.4 if window > 1 else 1.0, color="#4c72b0")
        if window > 1:  # trailing moving average over ~5% of the run
            smooth = [sum(ys[max(0, i - window + 1):i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(ys))]
            ax.plot(xs, smooth, lw=1.6, color="#4c72b0", label=f"mean of {window}")
            ax.legend(fontsize=7, loc="best")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(Path(metrics_jsonl).parent.name or str(metrics_jsonl), fontsize=10)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


if __name__ == "__main__":
    _out, *_args = sys.argv[1:]
    if len(_args) == 1 and _args[0].endswith(".jsonl"):
        print(plot_metrics(_args[0], _out))
    else:
        print(plot_runs(dict(a.split("=", 1) for a in _args), _out))
