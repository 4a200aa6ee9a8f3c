"""`una-hpc bench replicate` / `make replicate`: the paper's comparison on the embedded task, several seeds, one report.

    una-hpc bench replicate                                   # 3 seeds of every method, then the report
    una-hpc bench replicate --quick --out /tmp/r --report-dir /tmp/r    # minutes: every method trains and reports
    una-hpc bench replicate --report-only                     # rebuild the report from runs/replicate

1. One embedded task (task.seed 42: SFT base, scored dataset, reward model) is built once and shared by every run;
   only trainer.seed changes between seeds.
2. Each (method, seed) is `una-hpc demo CONFIG trainer.seed=S` in its own process: train, then evaluate on the
   held-out prompts (exact gold reward, win rate against the base, KL to it). Its peak RSS is that process's
   (os.wait4). A finished run leaves record.json and is not run again; a killed one resumes from its checkpoint.
3. The online pair runs the same number of steps; then the slower method runs again with trainer.max_time_s set to
   the faster one's training seconds: equal steps and equal wall-clock, both evaluated.
4. una_hpc/bench/report.py writes replicate.md, replicate.json and the PNGs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .methods import BY_KEY, EQUAL_TIME_PAIR, METHODS, Method


class RunFailed(Exception):
    """One (method, seed) process exited non-zero."""


QUICK_TASK = ("task.sft_steps=60", "task.num_prompts=16", "task.responses_per_prompt=2", "task.rm_steps=20")
QUICK_EVAL = ("eval.num_prompts=8", "eval.max_new_tokens=16")
QUICK_OFFLINE = ("trainer.max_steps=3", "trainer.batch_size=8", "trainer.micro_batch_size=8", "optim.warmup_steps=0")
QUICK_ONLINE = (
    "trainer.max_steps=2",
    "rollout.engine=hf",
    "rollout.prompts_per_step=4",
    "rollout.samples_per_prompt=2",
    "rollout.max_new_tokens=16",
    "trainer.batch_size=8",
    "trainer.micro_batch_size=8",
    "optim.warmup_steps=0",
)


def _rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def _per_prompt(eval_json: dict) -> list[float]:
    return [float(s["score"]) for s in eval_json["samples"]]


def summarize_run(method: Method, seed: int, run_dir: Path, wall_s: float, peak_rss_mb: float) -> dict:
    """One run's record: training cost from metrics.jsonl, quality from eval.json and base_eval/eval.json."""
    rows = [r for r in _rows(run_dir) if "step_s" in r]
    aligned = json.loads((run_dir / "eval.json").read_text())
    base = json.loads((run_dir / "base_eval" / "eval.json").read_text())
    gold, base_gold = _per_prompt(aligned), _per_prompt(base)
    elapsed, curve = 0.0, []
    for r in rows:
        elapsed += r["step_s"]
        curve.append({"step": r["step"], "train_s": elapsed, "rollout_gold": r.get("gold_reward")})
    tokens = sum(r.get("tokens", 0) for r in rows)
    steady = rows[1:] or rows  # the first step carries engine warm-up
    record = {
        "method": method.key,
        "label": method.label,
        "seed": seed,
        "online": method.online,
        "models": list(method.models),
        "steps": rows[-1]["step"] if rows else 0,
        "train_s": elapsed,
        "wall_s": wall_s,
        "tokens_per_s": tokens / elapsed if elapsed else None,
        "peak_rss_mb": peak_rss_mb,
        "gold": gold,
        "base_gold": base_gold,
        "win": [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(gold, base_gold)],
        "kl": aligned["kl"]["mean"],
        "mean_response_tokens": aligned["mean_response_tokens"],
        "curve": curve,
    }
    if method.online:
        for phase in ("generate", "score", "train", "sync"):
            record[f"phase_{phase}_s"] = statistics.mean(r.get(f"time_{phase}_s", 0.0) for r in steady or [{}])
        record["train_peak_mb"] = max((r.get("peak_memory_mb", 0.0) for r in rows), default=0.0)
    return record


def run_one(
    method: Method, seed: int, out: Path, configs: Path, extra: tuple[str, ...], *, tag: str = "", budget_s: float = 0
) -> dict:
    """Train + evaluate one (method, seed) in its own process, or read its record when it already finished."""
    run_dir = out / f"{method.key}{tag}" / f"seed-{seed}"
    record_path = run_dir / "record.json"
    if record_path.is_file():
        return json.loads(record_path.read_text())
    cmd = [
        sys.executable,
        "-m",
        "una_hpc.cli",
        "demo",
        str(configs / method.config),
        *method.overrides,
        f"trainer.seed={seed}",
        f"trainer.output_dir={run_dir}",
        "trainer.resume=true",
        "trainer.progress=false",
        *extra,
    ]
    if budget_s:
        cmd.append(f"trainer.max_time_s={budget_s:.2f}")
    log_path = out / f"{method.key}{tag}" / f"seed-{seed}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"[replicate] {method.key}{tag} seed {seed}: log {log_path}", flush=True)
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall_s = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        tail = log_path.read_text().strip().splitlines()[-1:] or ["(empty log)"]
        raise RunFailed(f"{method.key}{tag} seed {seed} failed ({log_path}): {tail[0]}")
    record = summarize_run(method, seed, run_dir, wall_s, usage.ru_maxrss / 1024)
    record["tag"], record["budget_s"] = tag, budget_s
    tmp = record_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(record_path)
    g = statistics.mean(record["gold"])
    print(f"[replicate] {method.key}{tag} seed {seed}: gold {g:.3f}, {record['train_s']:.0f} s training", flush=True)
    return record


def quick_overrides(online: bool, out: Path, quick: bool) -> tuple[str, ...]:
    """--quick: the small task (built under --out), short eval, few steps; nothing otherwise."""
    if not quick:
        return ()
    steps = QUICK_ONLINE if online else QUICK_OFFLINE
    return (*QUICK_TASK, *QUICK_EVAL, *steps, f"task.dir={out / 'task'}")


def run_all(methods: list[Method], seeds: list[int], out: Path, configs: Path, quick: bool) -> list[dict]:
    records = []
    for m in methods:
        records += [run_one(m, s, out, configs, quick_overrides(m.online, out, quick)) for s in seeds]
    a, b = EQUAL_TIME_PAIR
    if a in {m.key for m in methods} and b in {m.key for m in methods}:
        records += equal_time_runs(records, seeds, out, configs, quick)
    return records


def equal_time_runs(records: list[dict], seeds: list[int], out: Path, configs: Path, quick: bool) -> list[dict]:
    """Per seed, the slower of the online pair again on the faster one's training seconds (trainer.max_time_s)."""
    runs = []
    for s in seeds:
        pair = {r["method"]: r for r in records if r["seed"] == s and r["method"] in EQUAL_TIME_PAIR and not r["tag"]}
        slow, fast = sorted(pair.values(), key=lambda r: -r["train_s"])
        extra = quick_overrides(True, out, quick)
        runs.append(run_one(BY_KEY[slow["method"]], s, out, configs, extra, tag="@time", budget_s=fast["train_s"]))
    return runs


def load_records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*/seed-*/record.json"))]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, default=3, help="training seeds per method (default 3; --quick: 1)")
    p.add_argument("--quick", action="store_true", help="tiny task and few steps: checks every method end to end")
    p.add_argument("--out", type=Path, default=Path("runs/replicate"), help="run dirs (default runs/replicate)")
    p.add_argument("--report-dir", type=Path, default=Path("benchmarks/results"), help="where replicate.md goes")
    p.add_argument("--configs", type=Path, default=Path("configs/replicate"), help="method configs")
    p.add_argument("--methods", default="", help=f"comma-separated subset of: {', '.join(BY_KEY)}")
    p.add_argument("--report-only", action="store_true", help="rebuild the report from the runs in --out")


def main(args: argparse.Namespace) -> int:
    from .report import write_report

    unknown = [k for k in args.methods.split(",") if k and k not in BY_KEY]
    if unknown:
        raise ValueError(f"--methods: unknown {', '.join(unknown)}; known: {', '.join(BY_KEY)}")
    methods = [BY_KEY[k] for k in args.methods.split(",") if k] or list(METHODS)
    seeds = list(range(1, (1 if args.quick and args.seeds == 3 else args.seeds) + 1))
    t0 = time.perf_counter()
    if args.report_only:
        records = load_records(args.out)
    else:
        for m in methods:
            if not (args.configs / m.config).is_file():
                raise FileNotFoundError(f"{args.configs / m.config}: method config not found (--configs)")
        records = run_all(methods, seeds, args.out, args.configs, args.quick)
    if not records:
        raise FileNotFoundError(f"{args.out}: no finished runs (record.json) to report on")
    report = write_report(records, args.report_dir, quick=args.quick)
    print(f"[replicate] report: {report} ({(time.perf_counter() - t0) / 60:.1f} min)")
    return 0
