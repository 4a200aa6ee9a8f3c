"""DPO tokens/s of una-hpc against TRL's DPOTrainer on a ~0.5B model built from a config (part of gpu_check.sh).

    python benchmarks/gpu_dpo.py --out benchmarks/results/gpu_check.json --budget-s 150   # one GPU: bf16, 20 steps
    python benchmarks/gpu_dpo.py --dry-run --out /tmp/x.json                              # CPU: tiny, fp32, 2 steps

Adds the key "dpo_tokens_per_s" to the --out JSON (created when absent). No download: a byte-level BPE tokenizer
is trained on the synthetic text (una_hpc.models.tiny) and a Llama-shaped model gets random weights from a config:
hidden 1024, 24 layers, 16 heads (8 KV), MLP 2816, vocabulary 128256 (Llama 3's) untied, about 0.55B parameters.
The large untied vocabulary is the regime the fused seq_logps head is for; the tokenizer uses only its first ids,
which leaves the lm_head cost unchanged. Pairs are conversational (prompt/chosen/rejected), about 250-500 tokens per
sequence, and their number is steps x batch so that both sides consume every pair exactly once.

Each side is its own process, under `timeout` (a side that would overrun the budget is stopped and recorded as
"skipped: budget"); peak GPU memory is torch.cuda.max_memory_allocated() of that process. Both: full fine-tuning,
AdamW lr 1e-6 constant, beta 0.1, sigmoid DPO, trainer.dtype=bfloat16 / bf16=True (bf16 autocast over fp32 weights),
no gradient checkpointing, batch 8 pairs in one micro-batch, max_length 512. una-hpc tokens/s: "steady" from
metrics.jsonl (real tokens over step time, first 3 steps left out); "train" is real tokens of the consumed pairs over
the reference pass plus all steps, comparable to TRL's `trainer.train()` time (which recomputes the reference in
every step). TRL runs only where `import trl` works in this python (benchmarks/trl_dpo_runner.py).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import offline_vs_trl as ovt  # noqa: E402 - its pair vocabulary, token count and process timer

REPO = HERE.parent
WARM_STEPS = 3  # allocator growth, Triton compiles and autotuning happen in the first steps
MIN_SIDE_S = 20  # a side is not started with less than this left
# Runs a module or script as __main__ and prints the process's peak GPU memory last, even when it fails.
PEAK_WRAPPER = """import json, runpy, sys
target = sys.argv[1]
sys.argv = sys.argv[1:]
try:
    if target.endswith(".py"):
        runpy.run_path(target, run_name="__main__")
    else:
        runpy.run_module(target, run_name="__main__", alter_sys=True)
finally:
    import torch
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    print("GPU_PEAK " + json.dumps(peak), flush=True)
"""


def sizes(dry_run: bool) -> dict:
    """Model shape, run length and pair lengths in words (about one token each); vocab 0: the tokenizer's size."""
    if dry_run:
        model = dict(hidden=64, layers=2, heads=2, kv_heads=1, mlp=128, vocab=0)
        return {**model, "steps": 2, "batch": 2, "max_length": 96, "prompt_words": (6, 10),
                "answer_words": (8, 30), "dtype": "float32"}  # fmt: skip
    model = dict(hidden=1024, layers=24, heads=16, kv_heads=8, mlp=2816, vocab=128256)
    # prompt ~70-130 tokens plus an answer of 140-360: 210-490 per sequence, under max_length 512
    return {**model, "steps": 20, "batch": 8, "max_length": 512, "prompt_words": (60, 120),
            "answer_words": (140, 360), "dtype": "bfloat16"}  # fmt: skip


def make_rows(n: int, prompt_words: tuple[int, int], answer_words: tuple[int, int], seed: int = 0) -> list[dict]:
    """Conversational pairs as offline_vs_trl.make_pairs writes them, longer: one BPE token per word, about."""
    rng = random.Random(seed)

    def words(lo_hi: tuple[int, int]) -> str:
        return " ".join(rng.choice(ovt.WORDS) for _ in range(rng.randint(*lo_hi)))

    rows = []
    for _ in range(n):
        topic = rng.choice(ovt.TOPICS)
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"Tell me about {topic}: {words(prompt_words)}?"}],
                "chosen": [{"role": "assistant", "content": f"{topic.capitalize()}: {words(answer_words)}."}],
                "rejected": [{"role": "assistant", "content": f"{topic.capitalize()}: {words(answer_words)}."}],
            }
        )
    return rows


def build_model(out: Path, rows: list[dict], s: dict) -> dict:
    """Tokenizer trained on the rows plus a random-weight Llama from a config, saved as one HF dir."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from una_hpc.models.tiny import train_tokenizer

    texts = [m["content"] for r in rows for side in ("prompt", "chosen", "rejected") for m in r[side]]
    tok = train_tokenizer(texts, out, vocab_size=512)
    config = LlamaConfig(
        vocab_size=s["vocab"] or len(tok),
        hidden_size=s["hidden"],
        intermediate_size=s["mlp"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        num_key_value_heads=s["kv_heads"],
        head_dim=s["hidden"] // s["heads"],
        max_position_embeddings=max(2048, s["max_length"]),
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        rope_theta=500000.0,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())
    # bf16 on disk halves the write and the loads; both sides load it the same way (fp32 master weights).
    model.to(torch.bfloat16 if s["dtype"] == "bfloat16" else torch.float32).save_pretrained(str(out))
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    return {"params": params, **{k: getattr(config, k) for k in keys}, "tokenizer_size": len(tok)}


def run_side(cmd: list[str], log: Path, timeout_s: float) -> dict:
    """One process under `timeout` (offline_vs_trl.timed_process): wall, peak RSS/GPU memory, stdout; or status."""
    wrapped = ["timeout", "-k", "5", str(max(1, int(timeout_s))), sys.executable, "-c", PEAK_WRAPPER, *cmd]
    try:
        wall, rss, stdout = ovt.timed_process(wrapped, log)
    except SystemExit as e:  # timed_process exits on a failed child; the rest of the check goes on
        m = re.search(r"exited (-?\d+)", str(e))
        rc = int(m.group(1)) if m else None
        tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
        if rc in (124, 137, -9, -15):
            return {"status": f"skipped: budget (stopped after {int(timeout_s)} s)", "log_tail": tail}
        return {"status": f"failed: exit {rc}", "log_tail": tail}
    peak = [json.loads(ln.split(" ", 1)[1]) for ln in stdout.splitlines() if ln.startswith("GPU_PEAK ")]
    peak_gpu = peak[-1] if peak else None
    return {"status": "ok", "wall_s": wall, "peak_rss_mib": rss, "peak_gpu_bytes": peak_gpu, "stdout": stdout}


def run_una(model: Path, data: Path, out: Path, s: dict, tokens: int, timeout_s: float) -> dict:
    overrides = {
        "model.path": model,
        "model.lora_rank": 0,
        "model.gradient_checkpointing": "false",
        "data.path": data,
        "data.format": "conversational",
        "data.max_prompt_length": s["max_length"] // 2,
        "data.cache_dir": out / "cache",  # a cold reference pass: TRL computes its reference too
        "loss.name": "dpo",
        "loss.beta": 0.1,
        "optim.lr": 1e-6,
        "optim.schedule": "constant",
        "optim.warmup_steps": 0,
        "trainer.batch_size": s["batch"],
        "trainer.micro_batch_size": s["batch"],
        "trainer.max_steps": s["steps"],
        "trainer.max_length": s["max_length"],
        "trainer.dtype": s["dtype"],
        "trainer.seed": 0,
        "trainer.save_every": 0,
        "trainer.output_dir": out,
        "trainer.overwrite": "true",
        "trainer.progress": "false",
    }
    cmd = ["una_hpc.cli", "train", str(REPO / "configs/quickstart.yaml"), *(f"{k}={v}" for k, v in overrides.items())]
    res = run_side(cmd, out.with_suffix(".log"), timeout_s)
    stdout = res.pop("stdout", "")
    metrics = out / "metrics.jsonl"
    rows = [json.loads(ln) for ln in metrics.read_text().splitlines() if ln.strip()] if metrics.exists() else []
    # The last checkpoint and the final export (GBs at 0.5B) follow the last step: stopped there, the steps count.
    if res["status"].startswith("skipped: budget") and len(rows) >= s["steps"]:
        res["status"] = "ok: every step done, stopped in the final save (no reference-pass time)"
    if not res["status"].startswith("ok"):
        return {**res, "steps_done": len(rows)}
    if not rows:
        return {**res, "status": "failed: no metrics.jsonl rows", "stdout_tail": stdout.splitlines()[-3:]}
    steady = rows[min(WARM_STEPS, len(rows) - 1) :]
    m = re.search(r"reference logps: computed for \d+ examples in ([\d.]+) s", stdout)
    ref_s = float(m.group(1)) if m else 0.0
    train_s = ref_s + sum(r["step_s"] for r in rows)
    return {
        **res,
        "steps": len(rows),
        "tokens_per_s_steady": sum(r["tokens"] for r in steady) / sum(r["step_s"] for r in steady),
        "steady_steps": len(steady),
        "reference_pass_s": ref_s if m else None,
        "train_s": train_s,
        "tokens_per_s_train": tokens / train_s,
        "losses": [r["loss"] for r in rows],
    }


def trl_version(timeout_s: float) -> str | None:
    """trl's version where `import trl` works in this python (a child: its import is slow and may fail)."""
    try:
        cmd = [sys.executable, "-c", "import trl; print(trl.__version__)"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=REPO)
    except subprocess.TimeoutExpired:
        return None
    return p.stdout.strip().splitlines()[-1] if p.returncode == 0 and p.stdout.strip() else None


def run_trl(model: Path, data: Path, out: Path, s: dict, tokens: int, timeout_s: float, cuda: bool) -> dict:
    flags = {"model": model, "data": data, "out": out, "steps": s["steps"], "batch": s["batch"], "lr": 1e-6,
             "max-length": s["max_length"], "beta": 0.1, "lora-rank": 0, "gradient-checkpointing": 0, "seed": 0,
             "device": "cuda" if cuda else "cpu", "bf16": int(s["dtype"] == "bfloat16")}  # fmt: skip
    cmd = [str(HERE / "trl_dpo_runner.py"), *(f"--{k}={v}" for k, v in flags.items())]
    res = run_side(cmd, out.with_suffix(".log"), timeout_s)
    if res["status"] != "ok":
        return res
    inner = json.loads([ln for ln in res.pop("stdout").splitlines() if ln.startswith("{")][-1])
    train_s = inner["train_s"]
    return {**res, "train_s": train_s, "tokens_per_s_train": tokens / train_s, "losses": inner["losses"]}


def dpo_check(dry_run: bool, budget_s: float, work: Path) -> dict:
    import torch

    t0 = time.time()

    def left() -> float:
        return budget_s - (time.time() - t0)

    cuda = torch.cuda.is_available() and not dry_run
    s = sizes(dry_run)
    # the vocabulary is under "model" (vocab 0 here means the tokenizer's size)
    result: dict = {"setup": {k: v for k, v in s.items() if k not in ("prompt_words", "answer_words", "vocab")}}
    rows = make_rows(s["steps"] * s["batch"], s["prompt_words"], s["answer_words"])
    model, data = work / "model", work / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result["setup"]["model"] = build_model(model, rows, s)
    tokens = ovt.count_tokens(model, rows, s["max_length"])
    result["setup"].update(pairs=len(rows), tokens=tokens, device="cuda" if cuda else "cpu")
    version = trl_version(min(60.0, max(left() / 4, 5.0)))
    # una-hpc first; with TRL to come it gets half of what is left, so that TRL still has its share.
    una_s = left() / 2 if version else left()
    if una_s < MIN_SIDE_S:
        result["una_hpc"] = {"status": "skipped: budget"}
    else:
        result["una_hpc"] = run_una(model, data, work / "una", s, tokens, una_s)
    if version is None:
        result["trl"] = {"status": "skipped: not installed"}
    elif left() < MIN_SIDE_S:
        result["trl"] = {"status": "skipped: budget", "version": version}
    else:
        result["trl"] = {"version": version, **run_trl(model, data, work / "trl", s, tokens, left(), cuda)}
    u, t = result["una_hpc"], result["trl"]
    if u["status"].startswith("ok") and t["status"] == "ok":
        mem = (u["peak_gpu_bytes"], t["peak_gpu_bytes"])
        result["ratios_una_over_trl"] = {
            "tokens_per_s_train": u["tokens_per_s_train"] / t["tokens_per_s_train"],
            "peak_gpu_memory": mem[0] / mem[1] if all(mem) else None,
        }
    result["wall_s"] = time.time() - t0
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/gpu_check.json"), help="JSON to add the key to")
    ap.add_argument("--dry-run", action="store_true", help="CPU: tiny model, fp32, 2 steps of 2 pairs")
    ap.add_argument("--budget-s", type=float, default=240.0, help="all of it, model build included")
    args = ap.parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device: use --dry-run for the CPU check", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="gpu_dpo_") as tmp:
        try:
            result = dpo_check(args.dry_run, args.budget_s, Path(tmp))
        except Exception as e:  # noqa: BLE001 - recorded in the JSON; the kernel part is kept
            result = {"status": f"{type(e).__name__}: {str(e)[:300]}"}
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.exists() else {}
    report["dpo_tokens_per_s"] = result
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    keep = ("status", "tokens_per_s_train", "tokens_per_s_steady", "peak_gpu_bytes")
    brief = {side: {k: v for k, v in result.get(side, {}).items() if k in keep} for side in ("una_hpc", "trl")}
    print(json.dumps({"out": str(out), **brief, "ratios": result.get("ratios_una_over_trl")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
