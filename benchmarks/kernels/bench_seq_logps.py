"""Microbenchmark of seq_logps (policy fwd+bwd + reference fwd) against a naive torch version and peer kernels.

Run (from the repository root):
    GPU, full grid (bf16, T up to 16k, H 4096, V 32k/128k/256k):
        .venv/bin/python benchmarks/kernels/bench_seq_logps.py
    CPU quick grid (fp32, < 2 min; Triton only on a tiny shape, under its interpreter):
        TRITON_INTERPRET=1 .venv/bin/python benchmarks/kernels/bench_seq_logps.py --quick      (= make bench)
Writes benchmarks/results/seq_logps_<cpu|gpu name>.json and .png (or --out PREFIX).

Variants: naive (full [T, V] logits + log_softmax, policy then reference under no_grad), torch (chunked fallback),
triton (fused kernel), and when installed liger (Liger-Kernel fused linear cross entropy) and cce (cut-cross-entropy),
each run twice (policy with grad, reference without) as the peers' equivalent; peers reduce to one summed loss rather
than per-sequence sums. Every (variant, shape) runs in its own subprocess so peak memory is measured in isolation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
VARIANTS = ("naive", "torch", "triton", "liger", "cce")
# Dense bf16 tensor-core peaks (no sparsity), TFLOP/s, matched against torch.cuda.get_device_name().
BF16_PEAK_TFLOPS = [
    ("H200", 989.0),
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("RTX 4090", 165.0),
    ("A10G", 70.0),
]
GPU_GRID = [(t, 4096, v) for t in (4096, 16384) for v in (32768, 131072, 262144)]
QUICK_GRID = [(1024, 64, 16384), (2048, 64, 32768)]
TINY = (64, 32, 512)  # the only CPU shape for the Triton interpreter (numpy per tile op: very slow)
TOKENS_PER_SEQ = 256
# On CPU, RSS growth carries tens of MiB of allocator / library noise: memory ratios are only reported where one fp32
# [T, V] logits tensor is at least this large.
CPU_MIN_LOGITS_BYTES = 64 * 2**20


def flops(T: int, H: int, V: int) -> int:
    """Useful FLOPs: policy forward 2THV + backward 4THV (dh, dW) + reference forward 2THV; recompute not counted."""
    return 8 * T * H * V


# ----------------------------------------------------------------------------------------------- worker process
def _rss_bytes() -> int:
    import resource

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _make_step(variant: str, T: int, H: int, V: int, dtype, device):
    """Returns a closure running one policy fwd+bwd plus reference fwd on fresh seeded inputs."""
    import torch

    g = torch.Generator(device="cpu").manual_seed(0)
    hidden = torch.randn(T, H, generator=g).to(device, dtype).requires_grad_()
    weight = (torch.randn(V, H, generator=g) * H**-0.5).to(device, dtype).requires_grad_()
    ref_hidden = torch.randn(T, H, generator=g).to(device, dtype)
    ref_weight = (torch.randn(V, H, generator=g) * H**-0.5).to(device, dtype)
    labels = torch.randint(0, V, (T,), generator=g).to(device)  # no ignored tokens: every variant does 8THV
    S = max(1, T // TOKENS_PER_SEQ)
    seq_index = (torch.arange(T) * S // T).to(device)
    upstream = torch.randn(S, generator=g).to(device)

    if variant == "naive":

        def logps(h, w):
            tok = torch.log_softmax((h @ w.T).float(), dim=-1).gather(1, labels[:, None]).squeeze(1)
            return torch.zeros(S, device=device).index_add(0, seq_index, tok)

        def step():
            pol = logps(hidden, weight)
            with torch.no_grad():
                ref = logps(ref_hidden, ref_weight)
            ((pol - ref) * upstream).sum().backward()
    elif variant in ("torch", "triton"):
        from una_hpc.kernels import seq_logps

        def step():
            pol, ref = seq_logps(
                hidden, weight, labels, seq_index, S, ref_hidden=ref_hidden, ref_weight=ref_weight, backend=variant
            )
            ((pol - ref) * upstream).sum().backward()
    elif variant == "liger":
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

        flce = LigerFusedLinearCrossEntropyLoss(reduction="sum")

        def step():
            pol = flce(weight, hidden, labels)
            with torch.no_grad():
                flce(ref_weight, ref_hidden, labels)
            (pol[0] if isinstance(pol, tuple) else pol).backward()
    elif variant == "cce":
        from cut_cross_entropy import linear_cross_entropy

        def step():
            pol = linear_cross_entropy(hidden, weight, labels, reduction="sum")
            with torch.no_grad():
                linear_cross_entropy(ref_hidden, ref_weight, labels, reduction="sum")
            pol.backward()
    else:
        raise ValueError(variant)

    def run():
        hidden.grad = weight.grad = None
        step()

    return run


def worker(spec: dict) -> dict:
    """Runs one (variant, shape) and returns its timing and peak memory growth."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, spec["dtype"])
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    T, H, V = spec["T"], spec["H"], spec["V"]
    if device == "cpu":  # library warm-up on a 16-token batch, so one-time initialisation is not counted as memory
        _make_step(spec["variant"], 16, H, V, dtype, device)()
    run = _make_step(spec["variant"], T, H, V, dtype, device)
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
        # Reset the peak-RSS mark (Linux >= 4.0): ru_maxrss survives fork+exec and would carry the parent's RSS.
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    run()  # warm-up (Triton compile / autotune on GPU)
    sync()
    times = []
    for _ in range(spec["repeat"]):
        t0 = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - t0)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        with open("/proc/self/status") as f:
            peak = int(next(ln.split()[1] for ln in f if ln.startswith("VmHWM:"))) * 1024 - base
    return {"ms": 1e3 * sorted(times)[len(times) // 2], "times_ms": [1e3 * t for t in times], "peak_bytes": peak}


# ----------------------------------------------------------------------------------------------- driver
def machine() -> dict:
    import torch

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    return info


def installed(variant: str) -> bool:
    import importlib.util

    module = {"triton": "triton", "liger": "liger_kernel", "cce": "cut_cross_entropy"}.get(variant)
    return module is None or importlib.util.find_spec(module) is not None


def peak_tflops(gpu: str | None) -> float | None:
    return next((p for name, p in BF16_PEAK_TFLOPS if gpu and name in gpu), None)


def run_one(variant: str, shape, dtype: str, repeat: int, timeout: int) -> dict:
    T, H, V = shape
    spec = {"variant": variant, "T": T, "H": H, "V": V, "dtype": dtype, "repeat": repeat}
    env = dict(os.environ)
    if variant == "triton" and not _cuda():
        env["TRITON_INTERPRET"] = "1"
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        return {**spec, "status": f"timeout after {timeout}s"}
    if out.returncode != 0:
        err = out.stderr.strip().splitlines()
        reason = "oom" if "out of memory" in out.stderr.lower() else (err[-1] if err else f"exit {out.returncode}")
        return {**spec, "status": reason[:300]}
    return {**spec, "status": "ok", **json.loads(out.stdout.strip().splitlines()[-1])}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def plan(quick: bool, gpu: bool, variants) -> list[tuple[str, tuple[int, int, int]]]:
    jobs = []
    if gpu:
        grid = GPU_GRID[:2] if quick else GPU_GRID
        return [(v, s) for s in grid for v in variants]
    for shape in QUICK_GRID if quick else QUICK_GRID + [(4096, 64, 32768)]:
        jobs += [(v, shape) for v in variants if v in ("naive", "torch")]
    jobs += [(v, TINY) for v in variants if v in ("naive", "torch", "triton")]
    return jobs


def add_ratios(rows: list[dict], peak: float | None, gpu: bool) -> None:
    """Ratios against the naive run of the same shape in this same invocation; TFLOP/s from the useful FLOPs."""
    naive = {(r["T"], r["H"], r["V"]): r for r in rows if r["variant"] == "naive" and r["status"] == "ok"}
    for r in rows:
        if r["status"] != "ok":
            continue
        r["tflops"] = flops(r["T"], r["H"], r["V"]) / (r["ms"] * 1e-3) / 1e12
        if peak:
            r["peak_fraction"] = r["tflops"] / peak
        base = naive.get((r["T"], r["H"], r["V"]))
        if base:
            r["time_vs_naive"] = r["ms"] / base["ms"]
            measurable = gpu or r["T"] * r["V"] * 4 >= CPU_MIN_LOGITS_BYTES
            r["memory_vs_naive"] = r["peak_bytes"] / base["peak_bytes"] if measurable else None
            if not measurable:
                r["memory_note"] = "below CPU RSS resolution: [T, V] fp32 logits < 64 MiB"


def plot(rows: list[dict], info: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    shapes = sorted({(r["T"], r["H"], r["V"]) for r in ok})
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in ok)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    width = 0.8 / max(1, len(variants))
    for k, (key, label) in enumerate((("ms", "fwd+bwd time (ms, median)"), ("peak_bytes", "peak memory growth (MiB)"))):
        ax = axes[k]
        for j, v in enumerate(variants):
            xs, ys = [], []
            for i, s in enumerate(shapes):
                r = next((r for r in ok if r["variant"] == v and (r["T"], r["H"], r["V"]) == s), None)
                if r and not (key == "peak_bytes" and "memory_note" in r):  # unmeasurable CPU points left out
                    xs.append(i + j * width)
                    ys.append(max(r[key] / (2**20 if key == "peak_bytes" else 1), 1e-3))
            if not xs:
                continue
            interp = any(r["variant"] == v and r.get("interpreter") for r in ok)
            bars = ax.bar(xs, ys, width, label=v + (" (interpreter)" if interp else ""))
            ax.bar_label(bars, fmt="%.3g", fontsize=7)
        ax.set_xticks([i + width * (len(variants) - 1) / 2 for i in range(len(shapes))])
        ax.set_xticklabels([f"T={t}\nH={h}\nV={v}" for t, h, v in shapes], fontsize=8)
        ax.set_yscale("log")
        ax.set_title(label)
        ax.legend(fontsize=8)
    where = info["gpu"] or f"{info['cpu_model']} x{info['cpu_count']} CPUs"
    load = info["loadavg_before_after"][0][0]  # other work on a shared machine inflates CPU times
    fig.suptitle(
        f"seq_logps policy+reference ({rows[0]['dtype'] if rows else ''}) on {where} "
        f"[{info['platform']}], load average at start {load:.1f}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small grid (CPU: < 2 min)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    ap.add_argument("--repeat", type=int, default=None, help="timed runs per variant after one warm-up")
    ap.add_argument("--out", default=None, help="output prefix (default benchmarks/results/seq_logps_<machine>)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per (variant, shape) subprocess")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    info = machine()
    gpu = info["gpu"] is not None
    dtype = "bfloat16" if gpu else "float32"  # CPU bf16 matmuls are not representative of anything we ship
    repeat = args.repeat or (5 if gpu else 2)
    wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
    skipped = {v: "not installed" for v in wanted if not installed(v)}
    if not gpu:
        skipped.update({v: "needs CUDA" for v in ("liger", "cce") if v in wanted and v not in skipped})
    variants = [v for v in wanted if v not in skipped]
    notes = []
    if not gpu and "triton" in variants:
        notes.append(
            f"CPU: triton runs under TRITON_INTERPRET=1 (numpy per tile op), only at T,H,V={TINY}; its time "
            "measures the interpreter, not the kernel"
        )
    for v, why in skipped.items():
        notes.append(f"{v} skipped: {why}")
    for n in notes:
        print("note:", n)
    load_before = os.getloadavg()
    started = time.time()
    rows = []
    for variant, shape in plan(args.quick, gpu, variants):
        r = run_one(variant, shape, dtype, 1 if (variant == "triton" and not gpu) else repeat, args.timeout)
        r["interpreter"] = variant == "triton" and not gpu
        rows.append(r)
        msg = f"{r['ms']:.1f} ms, peak {r['peak_bytes'] / 2**20:.1f} MiB" if r["status"] == "ok" else r["status"]
        print(f"{variant:7s} T={shape[0]:6d} H={shape[1]:5d} V={shape[2]:7d}: {msg}", flush=True)
    peak = peak_tflops(info["gpu"])
    add_ratios(rows, peak, gpu)
    info["loadavg_before_after"] = [load_before, os.getloadavg()]
    tag = re.sub(r"[^a-z0-9]+", "-", info["gpu"].lower()).strip("-") if gpu else "cpu"
    prefix = Path(args.out) if args.out else RESULTS / f"seq_logps_{tag}"
    prefix.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "seq_logps: policy fwd+bwd + reference fwd, per-sequence log-prob sums",
        "machine": info,
        "dtype": dtype,
        "quick": args.quick,
        "wall_s": round(time.time() - started, 1),
        "method": {
            "timing": f"median of {repeat} runs after one warm-up run, time.perf_counter"
            + (" with torch.cuda.synchronize" if gpu else "")
            + "; each (variant, shape) in its own process",
            "memory": (
                "torch.cuda.max_memory_allocated() minus memory_allocated() after the inputs were allocated"
                if gpu
                else "peak RSS growth: VmHWM (reset after the inputs were allocated) minus the RSS then, "
                "allocated (after a 16-token warm-up), in a fresh process; includes allocator slack; ratios "
                "only where one fp32 [T, V] tensor >= 64 MiB"
            ),
            "flops": "8*T*H*V useful FLOPs (policy fwd 2 + bwd 4, reference fwd 2); recomputation not counted",
            "peak_tflops": peak,
            "peak_note": "dense bf16 tensor-core peak by device name"
            if peak
            else "no peak fraction (CPU or unknown GPU)",
            "labels": f"all tokens valid (no ignore_index), {TOKENS_PER_SEQ} tokens per sequence",
            "ratios": "time_vs_naive and memory_vs_naive against the naive run of the same shape in this invocation",
        },
        "notes": notes,
        "skipped": skipped,
        "results": rows,
    }
    prefix.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    plot(rows, info, prefix.with_suffix(".png"))
    print(f"wrote {prefix.with_suffix('.json')} and .png in {report['wall_s']} s")
    for r in rows:
        if r.get("time_vs_naive") is not None and r["variant"] != "naive":
            mem = "n/a" if r["memory_vs_naive"] is None else f"x{r['memory_vs_naive']:.3f}"
            print(
                f"  {r['variant']:7s} T={r['T']} H={r['H']} V={r['V']}: time x{r['time_vs_naive']:.2f}, "
                f"memory {mem} vs naive, {r['tflops']:.3g} TFLOP/s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
