"""Online UNA vs PPO in one harness: time per step (generate / score / train / sync), peak memory, models held,
and the gold-reward curve. Both runs use the same base model, reward model, prompts, seeds and step count.

    .venv/bin/python benchmarks/online_vs_ppo.py --steps 12                 # CPU, vLLM engine
    .venv/bin/python benchmarks/online_vs_ppo.py --steps 12 --engine hf

Each method runs in its own process (peak RSS / CUDA max-allocated is per method). Ratios are UNA / PPO from the
same invocation; the first step (engine warm-up) is excluded from the time means. Writes
benchmarks/results/online_vs_ppo_<cpu|gpu>_<engine>.json and .png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PHASES = ("generate", "score", "train", "sync")
# Models resident during training (the vLLM engine's weight copy counted separately): UNA needs no critic.
MODELS_HELD = {"una": ["policy", "reference", "reward model"], "ppo": ["policy", "reference", "reward model", "critic"]}


def run_method(method: str, steps: int, engine: str, out_root: Path, extra: list[str]) -> list[dict]:
    out = out_root / method
    cfg = REPO / "configs" / f"online_{method}.yaml"
    cmd = [
        sys.executable,
        "-m",
        "una_hpc.cli",
        "train",
        str(cfg),
        f"trainer.max_steps={steps}",
        f"trainer.output_dir={out}",
        f"rollout.engine={engine}",
        "trainer.progress=false",
        *extra,
    ]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def summarize(rows: list[dict]) -> dict:
    steady = rows[1:] or rows
    s = {f"{p}_s": statistics.mean(r.get(f"time_{p}_s", 0.0) for r in steady) for p in PHASES}
    s["step_s"] = sum(s[f"{p}_s"] for p in PHASES)
    s["peak_memory_mb"] = max(r["peak_memory_mb"] for r in rows)
    s["gold_reward"] = [r.get("gold_reward") for r in rows]
    s["rm_reward"] = [r.get("rm_reward") for r in rows]
    tail = [g for g in s["gold_reward"][-3:] if g is not None]
    s["final_gold_reward_last3"] = statistics.mean(tail) if tail else None
    return s


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for m in ("una", "ppo"):
        g = result[m]["gold_reward"]
        a.plot(range(1, len(g) + 1), g, marker="o", label=f"{m.upper()}")
    a.set(xlabel="step", ylabel="gold reward (mean of rollouts)", title="gold reward per step")
    a.legend()
    bottom = [0.0, 0.0]
    for p in PHASES:
        vals = [result[m][f"{p}_s"] for m in ("una", "ppo")]
        b.bar(["UNA", "PPO"], vals, bottom=bottom, label=p)
        bottom = [x + y for x, y in zip(bottom, vals)]
    b.set(ylabel="seconds per step (steady state)", title=f"time per step — {result['machine']['device']}")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--engine", choices=("vllm", "hf"), default="vllm")
    ap.add_argument("--out-root", type=Path, default=REPO / "runs" / "bench_online")
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("overrides", nargs="*", help="key.sub=value passed to both runs")
    args = ap.parse_args()
    result = {
        "machine": machine_info(),
        "steps": args.steps,
        "engine": args.engine,
        "overrides": args.overrides,
        "models_held": MODELS_HELD,
    }
    for m in ("una", "ppo"):
        result[m] = summarize(run_method(m, args.steps, args.engine, args.out_root, args.overrides))
    u, p = result["una"], result["ppo"]
    result["ratios_una_over_ppo"] = {
        "train_time": u["train_s"] / p["train_s"],
        "step_time": u["step_s"] / p["step_s"],
        "peak_memory": u["peak_memory_mb"] / p["peak_memory_mb"],
    }
    tag = "gpu" if result["machine"]["gpu"] else "cpu"
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"online_vs_ppo_{tag}_{args.engine}.json"
    out.write_text(json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))
    print(json.dumps(result["ratios_una_over_ppo"], indent=1))
    print(f"UNA gold (last 3 steps) {u['final_gold_reward_last3']}, PPO {p['final_gold_reward_last3']}")
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
