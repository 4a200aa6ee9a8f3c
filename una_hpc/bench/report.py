"""The replicate report: replicate.md, replicate.json and three PNGs from the runs' records (bench/replicate.py).

    una-hpc bench replicate --report-only          # rebuild from runs/replicate

Every interval is a 95% two-level bootstrap over training seeds and held-out prompts (una_hpc/bench/stats.py). The
paper's numbers are benchmark averages of 7B models (una_hpc/bench/paper.py): they sit beside ours for the ordering
they show, not as the same quantity.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
from collections import defaultdict
from pathlib import Path

import torch

from ..trainer.plots import _save, plt
from . import paper
from .memory_math import GB, MISTRAL_7B, Setup, per_rank
from .methods import METHODS
from .stats import Interval, cluster_bootstrap, difference, verdict


def _by_method(records: list[dict]) -> dict[str, list[dict]]:
    """Runs grouped by method (an equal wall-clock rerun is its own group, "ppo@time"), in METHODS order."""
    order = {m.key: i for i, m in enumerate(METHODS)}
    out: dict[str, list[dict]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (order.get(r["method"], len(order)), r.get("tag", ""), r["seed"])):
        out[r["method"] + r.get("tag", "")].append(r)
    return dict(out)


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.mean(xs) if xs else None


def summarize(runs: list[dict]) -> dict:
    """One method's row: intervals over seeds x prompts, costs averaged over seeds."""
    gain = [[g - b for g, b in zip(r["gold"], r["base_gold"])] for r in runs]
    row = {
        "label": runs[0]["label"] + (" (equal wall-clock)" if runs[0].get("tag") else ""),
        "seeds": len(runs),
        "online": runs[0]["online"],
        "models": runs[0]["models"],
        "gold": cluster_bootstrap([r["gold"] for r in runs]).as_dict(),
        "gain": cluster_bootstrap(gain).as_dict(),
        "win": cluster_bootstrap([r["win"] for r in runs]).as_dict(),
        "kl": _mean(r["kl"] for r in runs),
        "kl_sd": statistics.stdev([r["kl"] for r in runs]) if len(runs) > 1 else 0.0,
        "steps": _mean(r["steps"] for r in runs),
        "train_s": _mean(r["train_s"] for r in runs),
        "tokens_per_s": _mean(r["tokens_per_s"] for r in runs),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
    }
    if row["online"]:
        for k in ("phase_generate_s", "phase_score_s", "phase_train_s", "phase_sync_s", "train_peak_mb"):
            row[k] = _mean(r[k] for r in runs)
    return row


def _iv(d: dict, digits: int = 3) -> str:
    return Interval(d["mean"], d["lo"], d["hi"]).fmt(digits)


def _claims(groups: dict[str, list[dict]], claims) -> list[dict]:
    out = []
    for a, b, rel in claims:
        if a not in groups or b not in groups:
            continue
        d = difference([r["gold"] for r in groups[a]], [r["gold"] for r in groups[b]])
        out.append({"a": a, "b": b, "claim": rel, "difference": d.as_dict(), "verdict": verdict(d, rel)})
    return out


def _equal_time_claims(groups: dict[str, list[dict]]) -> tuple:
    """The online claim again at equal wall-clock (the slower method's "@time" rerun), and online UNA's two
    log-ratio forms side by side (the paper's against the authors' code; no claim either way)."""
    out = [("una_online", "ppo@time", ">=")] if "ppo@time" in groups else []
    out += [("una_online@time", "ppo", ">=")] if "una_online@time" in groups else []
    return (*out, ("una_online", "una_online_rollout", "vs"))


def _memory_7b() -> list[str]:
    """Model states per rank at 7B (8 GPUs, ZeRO-2, bf16) from the memory model: the part that grows with size."""
    lines = ["| Mistral-7B, 8 GPUs, ZeRO-2, bf16 | online UNA GB/rank | PPO GB/rank | UNA / PPO |", "|---|---|---|---|"]
    for lora in (32, 0):
        tot = {}
        for method in ("una_online", "ppo"):
            parts = per_rank(MISTRAL_7B, Setup(method=method, lora_rank=lora, zero=2, dp=8))
            tot[method] = sum(v for k, v in parts.items() if not k.startswith("act_") and k != "total") / GB
        name = f"LoRA r={lora}" if lora else "full fine-tuning"
        lines.append(f"| {name} | {tot['una_online']:.1f} | {tot['ppo']:.1f} | {tot['una_online'] / tot['ppo']:.2f} |")
    return lines


def _kl(r: dict) -> str:
    return f"{r['kl']:.2f} ± {r['kl_sd']:.2f}"


def _phases(r: dict) -> str:
    return " / ".join(f"{r[f'phase_{k}_s']:.2f}" for k in ("generate", "score", "train", "sync"))


OFFLINE_COLUMNS = (
    ("gold reward", lambda r: _iv(r["gold"])),
    ("gain over base", lambda r: _iv(r["gain"])),
    ("win rate vs base", lambda r: _iv(r["win"])),
    ("KL to base", _kl),
    ("tokens/s", lambda r: f"{r['tokens_per_s']:.0f}"),
    ("peak RSS MB", lambda r: f"{r['peak_rss_mb']:.0f}"),
    ("models held", lambda r: str(len(r["models"]))),
)
ONLINE_COLUMNS = (
    ("steps", lambda r: f"{r['steps']:.0f}"),
    ("gold reward", lambda r: _iv(r["gold"])),
    ("win rate vs base", lambda r: _iv(r["win"])),
    ("KL", _kl),
    ("training s", lambda r: f"{r['train_s']:.0f}"),
    ("s/step generate / score / train / sync", _phases),
    ("peak MB (training)", lambda r: f"{r['train_peak_mb']:.0f}"),
    ("models held", lambda r: f"{len(r['models'])} ({', '.join(r['models'])})"),
)


def _method_table(rows: dict[str, dict], online: bool) -> list[str]:
    """One row per offline (or online) method: the paper's table averages where it has the method (an equal-time
    rerun "ppo@time" shows its method's), then our columns."""
    tables, columns = (paper.ONLINE_TABLES, ONLINE_COLUMNS) if online else (paper.OFFLINE_TABLES, OFFLINE_COLUMNS)
    heads = [f"paper {t.split(':')[0]}" for t in tables] + [name for name, _ in columns]
    lines = ["| method | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for key, r in rows.items():
        if r["online"] == online:
            cells = [str(t.get(key.split("@")[0], "-")) for t in tables.values()] + [f(r) for _, f in columns]
            lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return lines


def _claims_table(claims: list[dict], labels: dict[str, str]) -> list[str]:
    lines = ["| paper's claim (vs: no claim) | measured a − b (gold reward) | verdict |", "|---|---|---|"]
    for c in claims:
        lines.append(f"| {labels[c['a']]} {c['claim']} {labels[c['b']]} | {_iv(c['difference'])} | {c['verdict']} |")
    return lines


def _mean_curve(runs: list[dict], window: int = 8) -> tuple[list[int], list[float], list[float]]:
    """Rollout gold reward per step, averaged over seeds then over a trailing window of steps (one step's 32
    rollouts are noisy: per-step std about 0.07), against the step and the seeds' mean training seconds."""
    n = min(len(r["curve"]) for r in runs)
    per_step = [[r["curve"][i] for r in runs] for i in range(n)]
    gold = [_mean(p["rollout_gold"] for p in pts) for pts in per_step]
    smooth = [_mean(gold[max(0, i - window + 1) : i + 1]) for i in range(n)]
    return [pts[0]["step"] for pts in per_step], smooth, [_mean(p["train_s"] for p in pts) for pts in per_step]


def _plots(groups: dict[str, list[dict]], rows: dict[str, dict], out: Path) -> list[Path]:
    keys = list(rows)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(keys)), 4))
    means = [rows[k]["gold"]["mean"] for k in keys]
    err = [
        [m - rows[k]["gold"]["lo"] for k, m in zip(keys, means)],
        [rows[k]["gold"]["hi"] - m for k, m in zip(keys, means)],
    ]
    ax.bar(range(len(keys)), means, yerr=err, capsize=3, color=["C1" if rows[k]["online"] else "C0" for k in keys])
    base = cluster_bootstrap([next(iter(groups.values()))[0]["base_gold"]])
    ax.axhspan(base.lo, base.hi, color="grey", alpha=0.2)
    ax.axhline(base.mean, color="grey", lw=1, label="base (95% CI)")
    ax.set_xticks(range(len(keys)), keys, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(
        min(base.lo, *(rows[k]["gold"]["lo"] for k in keys)) - 0.05, max(rows[k]["gold"]["hi"] for k in keys) + 0.03
    )
    ax.set_ylabel("held-out gold reward")
    ax.legend(fontsize=8)
    paths = [_save(fig, out / "replicate_gold.png")]

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (k, runs) in enumerate(groups.items()):
        ax.scatter([r["kl"] for r in runs], [statistics.mean(r["gold"]) for r in runs], color=f"C{i % 10}", s=12)
        ax.scatter([rows[k]["kl"]], [rows[k]["gold"]["mean"]], color=f"C{i % 10}", s=60, marker="D", label=k)
    ax.set_xlabel("KL(aligned || base), nats per response")
    ax.set_ylabel("held-out gold reward")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out / "replicate_reward_kl.png"))

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for i, (k, runs) in enumerate(g for g in groups.items() if g[1][0]["online"]):
        steps, gold, secs = _mean_curve(runs)
        a1.plot(steps, gold, color=f"C{i}", lw=1.5, label=k)
        a2.plot(secs, gold, color=f"C{i}", lw=1.5, label=k)
    a1.set_xlabel("step")
    a2.set_xlabel("training seconds (wall-clock)")
    a1.set_ylabel("rollout gold reward (seed mean, 8-step mean)")
    if a1.get_legend_handles_labels()[0]:
        a1.legend(fontsize=7)
    paths.append(_save(fig, out / "replicate_online.png"))
    return paths


def write_report(records: list[dict], out: Path, *, quick: bool = False) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    groups = _by_method(records)
    rows = {k: summarize(v) for k, v in groups.items()}
    labels = {k: v["label"] for k, v in rows.items()}
    offline_claims = _claims(groups, paper.CLAIMS)
    at_score_lr = {k: k if k == "una_score" else f"{k}_eqlr" for c in paper.CLAIMS for k in c[:2]}
    eqlr_claims = _claims(groups, tuple((at_score_lr[a], at_score_lr[b], c) for a, b, c in paper.CLAIMS))
    online_claims = _claims(groups, paper.ONLINE_CLAIMS + _equal_time_claims(groups))
    plots = _plots(groups, rows, out)
    base = cluster_bootstrap([next(iter(groups.values()))[0]["base_gold"]])
    seeds = max(r["seeds"] for r in rows.values())
    una, ppo = rows.get("una_online"), rows.get("ppo")
    title = "# The UNA paper's comparison, replicated on the embedded task"
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"
    md = [
        title + (" (quick mode: plumbing only)" if quick else ""),
        "",
        f"Measured by `una-hpc bench replicate` ({machine}), {datetime.date.today().isoformat()}; {seeds} training "
        "seed(s) per method. One SFT base (0.62M-parameter Llama) "
        "and one scored dataset (its own samples, exact gold reward) shared by every run; evaluation: greedy responses "
        "to the held-out prompts, scored by the exact gold reward. Intervals: 95%, bootstrap over seeds and prompts.",
        "",
        f"Base model: gold reward {base.fmt()}.",
        "",
        "## Hyperparameters: the paper's, scaled to the tiny model",
        "",
        "| setting | paper | here | factor |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in paper.SCALING],
        "",
        "## Offline (paper Tables 1-3: Mistral-7B on HelpSteer2; ours: gold reward on the embedded task)",
        "",
        *_method_table(rows, online=False),
        "",
        "### The paper's offline ordering, measured",
        "",
        *_claims_table(offline_claims, labels),
        "",
        *(
            ["At one learning rate for every loss (UNA-score's, 1e-4; the controls above):", ""]
            + _claims_table(eqlr_claims, labels)
            + [""]
            if eqlr_claims
            else []
        ),
        "## Online UNA against PPO (paper Tables 4-6: Qwen2-1.5B)",
        "",
        *_method_table(rows, online=True),
        "",
        *_claims_table(online_claims, labels),
        "",
    ]
    if una and ppo:
        ratio = una["train_s"] / ppo["train_s"]
        md += [
            f"Training time, online UNA / PPO at equal steps: {ratio:.2f}x here; the paper: {paper.ONLINE_COST['v4']}; "
            f"its v2: {paper.ONLINE_COST['v2']}. Peak training memory here: "
            f"{una['train_peak_mb']:.0f} MB against {ppo['train_peak_mb']:.0f} MB (process RSS; at this size the "
            "runtime dominates, not the models).",
            "",
            "What grows with model size, from the memory model (una_hpc/bench/memory_math.py; weights, gradients and "
            "optimizer states of the trained models plus frozen copies; activations excluded):",
            "",
            *_memory_7b(),
            "",
        ]
    md += ["## Plots", "", *[f"![{p.stem}]({p.name})" for p in plots], ""]
    report = out / "replicate.md"
    claims = offline_claims + eqlr_claims + online_claims
    (out / "replicate.json").write_text(
        json.dumps({"methods": rows, "claims": claims, "base": base.as_dict()}, indent=1)
    )
    report.write_text("\n".join(md))
    return report
