"""una-hpc DPO against TRL's DPOTrainer on the real SmolLM2-135M-Instruct: same pairs, LoRA, batch, length, steps.

    .venv/bin/python benchmarks/offline_vs_trl.py                      # 80 pairs, 10 steps x 8 pairs, length 128
    .venv/bin/python benchmarks/offline_vs_trl.py --repeats 2 --trl-no-gc 0

TRL runs in its own venv (benchmarks/.venv-trl, built on first use with the same torch, transformers, peft and
datasets versions as .venv, plus trl==1.16.0; about 1.5 min). Each run is a whole process, timed from start to exit;
its peak RSS comes from the kernel (`os.wait4`), so loading, tokenization and training all count. The runs alternate
(una-hpc, TRL, TRL without checkpointing, una-hpc, ...) so that a slow spell of a shared machine hits all; ratios are
una-hpc / TRL of the medians. Tokens are the real (unpadded) prompt + completion tokens of the pairs the steps consume.

Both sides: fp32, LoRA r=8 alpha 16 on q/k/v/o (dropout 0), lr 5e-5 constant, beta 0.1, sigmoid DPO loss, the whole
batch of 8 pairs per optimizer step. Each side runs as its user gets it:
- TRL at its defaults: gradient checkpointing on, each batch padded to its longest sequence, the reference
  recomputed in every step, logits of every position. A second TRL run without checkpointing (`--trl-no-gc 1`, the
  default) shows how much of the gap that one setting is.
- una-hpc at its defaults: no gradient checkpointing; rows packed, a pair's prompt stored once (data.share_prompt);
  reference log-probs computed once before training (data.ref_cache, cold in every run); no logits materialized (the
  fused seq_logps op); micro-batches of `--una-micro-batch` pairs (2), which bounds activation memory without
  checkpointing and gives the same gradient as one micro-batch (global normalizer).
Writes benchmarks/results/offline_vs_trl_<cpu|gpu>.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TRL_VENV = REPO / "benchmarks" / ".venv-trl"
TRL_VERSION = "1.16.0"
SAME_AS_MAIN = ("torch", "transformers", "peft", "datasets", "accelerate")
SIDES = {
    "una_hpc": "una-hpc",
    "trl": f"TRL {TRL_VERSION}",
    "trl_no_gc": f"TRL {TRL_VERSION}, no checkpointing",
}

TOPICS = ("the ocean", "bicycles", "volcanoes", "coffee", "libraries", "trains", "bees", "winter", "chess", "rivers")
WORDS = (
    "the quick answer is clear and short because every part of it follows what was asked while the other one wanders "
    "far from the question with words that add nothing useful a reader could check or use later today"
).split()


def make_pairs(n: int, seed: int) -> list[dict]:
    """Conversational pairs (TRL's preference type with an explicit prompt) of varied length, 40-120 tokens each."""
    rng = random.Random(seed)
    rows = []

    def text(topic: str, k: int) -> str:
        return f"{topic.capitalize()}: " + " ".join(rng.choice(WORDS) for _ in range(k)) + "."

    for _ in range(n):
        topic = rng.choice(TOPICS)
        prompt = f"Tell me about {topic} in at most {rng.choice((20, 30, 40))} words."

        rows.append(
            {
                "prompt": [{"role": "user", "content": prompt}],
                "chosen": [{"role": "assistant", "content": text(topic, rng.randint(10, 40))}],
                "rejected": [{"role": "assistant", "content": text(topic, rng.randint(15, 70))}],
            }
        )
    return rows


def count_tokens(model_dir: Path, rows: list[dict], max_length: int) -> int:
    """Real tokens of prompt+chosen and prompt+rejected through the chat template, each cut at max_length."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    total = 0
    for r in rows:
        for side in ("chosen", "rejected"):
            text = tok.apply_chat_template(r["prompt"] + r[side], tokenize=False)
            total += min(len(tok(text, add_special_tokens=False)["input_ids"]), max_length)
    return total


def ensure_trl_venv() -> Path:
    python = TRL_VENV / "bin" / "python"
    if python.exists():
        return python
    import importlib.metadata as md

    pins = [f"{name}=={md.version(name).split('+')[0]}" for name in SAME_AS_MAIN]
    print(f"building {TRL_VENV} (trl=={TRL_VERSION}, {' '.join(pins)})", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(TRL_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, pins[0]], check=True)  # torch alone first: the pinned version takes the CPU wheel
    subprocess.run([*pip, *pins[1:], f"trl=={TRL_VERSION}"], check=True)
    return python


def timed_process(cmd: list[str], log: Path) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MiB, stdout) of a whole child process."""
    start = time.perf_counter()
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} ... exited {proc.returncode}; see {log}")
    return wall, usage.ru_maxrss / 1024, out  # ru_maxrss is in KiB on Linux


def run_una(model: Path, data: Path, out: Path, args) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "una_hpc.cli",
        "train",
        str(REPO / "configs" / "quickstart.yaml"),
        f"model.path={model}",
        f"data.path={data}",
        "data.format=conversational",
        "loss.name=dpo",
        f"loss.beta={args.beta}",
        f"optim.lr={args.lr}",
        "optim.schedule=constant",
        "optim.warmup_steps=0",
        f"model.lora_rank={args.lora_rank}",
        f"model.lora_alpha={2 * args.lora_rank}",
        "model.lora_dropout=0.0",
        "model.lora_target_modules=[q_proj,k_proj,v_proj,o_proj]",
        f"model.gradient_checkpointing={bool(args.una_gc)}",
        f"trainer.batch_size={args.batch}",
        f"trainer.micro_batch_size={args.una_micro_batch}",
        f"trainer.max_steps={args.steps}",
        f"trainer.max_length={args.max_length}",
        "trainer.dtype=float32",
        f"trainer.seed={args.seed}",
        f"trainer.output_dir={out}",
        f"data.cache_dir={out}/cache",  # a cold reference pass in every run: TRL computes its reference too
        "trainer.overwrite=true",
        "trainer.progress=false",
        *args.una_overrides,
    ]
    wall, rss, stdout = timed_process(cmd, out.with_suffix(".log"))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # The training phase includes the one reference pass, as TRL's includes a reference forward in every step.
    ref_s = float(re.search(r"reference logps: computed for \d+ examples in ([\d.]+) s", stdout).group(1))
    return {
        "wall_s": wall,
        "peak_rss_mib": rss,
        "reference_pass_s": ref_s,
        "train_s": ref_s + sum(r["step_s"] for r in rows),
        "losses": [r["loss"] for r in rows],
    }


def run_trl(python: Path, model: Path, data: Path, out: Path, args, gc: int) -> dict:
    cmd = [
        str(python),
        str(REPO / "benchmarks" / "trl_dpo_runner.py"),
        f"--model={model}",
        f"--data={data}",
        f"--out={out}",
        f"--steps={args.steps}",
        f"--batch={args.batch}",
        f"--max-length={args.max_length}",
        f"--lr={args.lr}",
        f"--beta={args.beta}",
        f"--lora-rank={args.lora_rank}",
        f"--gradient-checkpointing={gc}",
        f"--seed={args.seed}",
    ]
    wall, rss, stdout = timed_process(cmd, out.with_suffix(".log"))
    inner = json.loads(stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "peak_rss_mib": rss, "train_s": inner["train_s"], "losses": inner["losses"]}


def summarize(runs: list[dict], tokens: int) -> dict:
    med = {k: statistics.median(r[k] for r in runs) for k in ("wall_s", "peak_rss_mib", "train_s")}
    return {
        **med,
        "tokens_per_s_process": tokens / med["wall_s"],
        "tokens_per_s_train": tokens / med["train_s"],
        "runs": runs,
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sides = [s for s in SIDES if s in result]
    labels = [SIDES[s].replace(", ", "\n") for s in sides]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, title in zip(
        axes,
        ("tokens_per_s_process", "tokens_per_s_train", "peak_rss_mib"),
        ("tokens/s, whole process", "tokens/s, training steps", "peak RSS (MiB)"),
    ):
        vals = [result[s][key] for s in sides]
        ax.bar(labels, vals, color=["tab:blue", "tab:gray", "silver"][: len(sides)])
        ax.set_title(title)
        ax.tick_params(axis="x", labelsize=7)
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:.0f}", ha="center", va="bottom")
    r = result["ratios_una_over_trl"]
    fig.suptitle(
        f"DPO on SmolLM2-135M, {result['setup']['steps']} steps x {result['setup']['batch']} pairs — vs TRL defaults: "
        f"speed x{r['tokens_per_s_process']:.2f}, memory x{r['peak_rss']:.2f} — {result['machine']['device']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=80)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--una-gc", type=int, choices=(0, 1), default=0, help="una-hpc gradient checkpointing")
    ap.add_argument("--una-micro-batch", type=int, default=2, help="una-hpc pairs per forward/backward")
    ap.add_argument("--trl-gc", type=int, choices=(0, 1), default=1, help="TRL gradient checkpointing (its default)")
    ap.add_argument("--trl-no-gc", type=int, choices=(0, 1), default=1, help="also run TRL without checkpointing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--task-dir", type=Path, default=REPO / "runs" / "real", help="where SmolLM2 is converted once")
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--una-overrides", nargs="*", default=[], help="extra key=value for the una-hpc side only")
    args = ap.parse_args()

    from una_hpc.task.smollm2 import build_smollm2

    model = build_smollm2(args.task_dir / "smollm2")
    trl_python = ensure_trl_venv()
    rows = make_pairs(args.pairs, args.seed)
    tokens = count_tokens(model, rows[: args.steps * args.batch], args.max_length)
    runs: dict[str, list[dict]] = {side: [] for side in SIDES if side != "trl_no_gc" or args.trl_no_gc}
    with tempfile.TemporaryDirectory(prefix="offline_vs_trl_") as tmp:
        data = Path(tmp) / "pairs.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        for i in range(args.repeats):
            for side in runs:
                out = Path(tmp) / f"{side}{i}"
                if side == "una_hpc":
                    runs[side].append(run_una(model, data, out, args))
                else:
                    runs[side].append(run_trl(trl_python, model, data, out, args, args.trl_gc if side == "trl" else 0))
                last = runs[side][-1]
                print(f"{SIDES[side]:28s} run {i}: {last['wall_s']:.1f} s, {last['peak_rss_mib']:.0f} MiB", flush=True)
    result = {
        "machine": machine_info(),
        "setup": {k: v for k, v in vars(args).items() if k not in ("task_dir", "results")},
        "tokens": tokens,
        **{side: summarize(r, tokens) for side, r in runs.items()},
    }
    u = result["una_hpc"]
    for side in [s for s in runs if s != "una_hpc"]:
        t = result[side]
        result["ratios_una_over_" + side] = {
            "tokens_per_s_process": u["tokens_per_s_process"] / t["tokens_per_s_process"],
            "tokens_per_s_train": u["tokens_per_s_train"] / t["tokens_per_s_train"],
            "peak_rss": u["peak_rss_mib"] / t["peak_rss_mib"],
        }
    tag = "gpu" if result["machine"]["gpu"] else "cpu"
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"offline_vs_trl_{tag}.json"
    out.write_text(json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in result.items() if k.startswith("ratios_")}, indent=1))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
