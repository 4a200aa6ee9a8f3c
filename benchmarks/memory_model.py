"""Per-rank training memory: offline UNA vs online UNA vs PPO, under ZeRO stages and tensor parallelism.

    .venv/bin/python benchmarks/memory_model.py table        # 7B / 70B tables (markdown), as in docs/scaling.md
    .venv/bin/python benchmarks/memory_model.py check        # measure model states on a tiny model (2 ranks, CPU)
                                                             # and compare with the model; writes results/ JSON

Model states (validated by `check`): weights w*P (ZeRO-3: /dp), gradients w*P_t (ZeRO-2/3: /dp), DeepSpeed's fp32
master partition 4*P_t/dp (ZeRO >= 1; also fp32 runs), Adam moments 8*P_t (ZeRO >= 1: /dp), communication buckets
(hidden^2 elements, as una_hpc.parallel.ds_config sizes them). Tensor parallelism divides everything but the
input embedding by tp. Activations (an estimate, not validated on CPU): with gradient checkpointing one bf16 hidden
state per layer plus one layer's working set (~34*b*S*H bytes / tp, flash attention), plus the logits: the fused
seq_logps kernel keeps one [tile, V] tile; a PPO/HF path holds [b*S, V] fp32 log-probs and their gradient.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

from una_hpc.bench.memory_math import (
    GB,
    LLAMA_70B,
    MISTRAL_7B,
    Setup,
    Shape,
    model_states,
    per_rank,
)

HERE = Path(__file__).resolve().parent


def table(shape: Shape, dp_total: int = 8) -> str:
    rows = [
        "| method | LoRA | ZeRO | TP | model states GB | activations GB | total GB/rank |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in ("una_offline", "una_online", "ppo"):
        for lora in (0, 32):
            for zero, tp in ((0, 1), (1, 1), (2, 1), (3, 1), (1, 2), (1, 8)):
                if tp > 1 and method != "una_offline":
                    continue  # online runs refuse tensor parallelism (config_checks.py): no rows for them
                s = Setup(method=method, lora_rank=lora, zero=zero, tp=tp, dp=max(dp_total // tp, 1))
                p = per_rank(shape, s)
                act = sum(v for k, v in p.items() if k.startswith("act_"))
                rows.append(
                    f"| {method} | {lora or '-'} | {zero} | {tp} | {(p['total'] - act) / GB:.1f} | "
                    f"{act / GB:.1f} | {p['total'] / GB:.1f} |"
                )
    return (
        f"**{shape.name}** ({shape.params / 1e9:.2f}B parameters), {dp_total} GPUs, bf16, micro-batch 4 x 1024 "
        f"tokens, gradient checkpointing\n\n" + "\n".join(rows)
    )


# ---- measurement on a tiny model (CPU, 2 ranks) ----

TINY = Shape("tiny", 256, 4, 2048, 1024, 4, 4)


def live_tensor_bytes(extra=()) -> int:
    """Bytes of distinct CPU tensor storages reachable from Python (+ `extra`): the model states after a step."""
    import torch

    seen: dict[int, int] = {}

    def add(t):
        if t is None or t.device.type != "cpu":
            return
        st = t.untyped_storage()
        if st.nbytes():
            seen[st.data_ptr()] = max(seen.get(st.data_ptr(), 0), st.nbytes())

    for o in gc.get_objects():
        try:
            if isinstance(o, torch.Tensor):
                add(o)
        except Exception:  # objects whose isinstance check fails (lazy modules)
            continue
    for t in extra:
        add(t)
    return sum(seen.values())


def worker(stage: str, dtype: str, out: Path) -> None:
    """Two optimizer steps of UNA-style logps training; records the peak of live model-state bytes."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from una_hpc.config import Config
    from una_hpc.parallel import build_engine

    gc.collect()
    base = live_tensor_bytes()
    cfg = Config()
    cfg.trainer.max_steps, cfg.trainer.dtype = 4, dtype
    cfg.parallel.backend = "none" if stage == "local" else "deepspeed"
    cfg.parallel.zero_stage, cfg.parallel.dist_backend = (0 if stage == "local" else int(stage)), "gloo"
    torch.manual_seed(0)
    t = TINY
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=t.vocab,
            hidden_size=t.hidden,
            intermediate_size=t.intermediate,
            num_hidden_layers=t.layers,
            num_attention_heads=t.heads,
            num_key_value_heads=t.kv_heads,
            tie_word_embeddings=False,
        )
    )
    engine = build_engine(model, cfg)
    ids = torch.randint(0, t.vocab, (2, 32))
    labels, seq = ids.roll(-1, 1), torch.arange(2).unsqueeze(1).expand(-1, 32)
    peak = 0
    for _ in range(2):
        with engine.autocast():
            hidden = engine.hidden_states(input_ids=ids)
        logps, _ = engine.seq_logps(hidden, labels, seq, 2)
        engine.backward(logps.sum() * 1e-3)
        gc.collect()
        peak = max(peak, live_tensor_bytes([p.grad for p in engine.module.parameters()]) - base)
        engine.step()
    if engine.is_main:
        out.write_text(json.dumps({"peak_model_state_bytes": peak, "dp": engine.dp_world_size}))


def check(out_json: Path) -> int:
    sys.path.insert(0, str(HERE))
    from machine import machine_info

    cases = [
        ("local", "float32"),
        ("0", "float32"),
        ("1", "float32"),
        ("2", "float32"),
        ("3", "float32"),
        ("2", "bfloat16"),
        ("3", "bfloat16"),
    ]
    results, worst = [], 0.0
    tmp = HERE / "results" / ".memory_tmp.json"
    for stage, dtype in cases:
        env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
        args = [str(Path(__file__)), "worker", stage, dtype, str(tmp)]
        cmd = (
            [sys.executable, *args]
            if stage == "local"
            else [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2", "--no_local_rank", *args]
        )
        subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
        m = json.loads(tmp.read_text())
        s = Setup(
            zero=0 if stage == "local" else int(stage), tp=1, dp=m["dp"], weight_bytes=2 if dtype == "bfloat16" else 4
        )
        predicted = sum(model_states(TINY, s).values())
        err = predicted / m["peak_model_state_bytes"] - 1
        worst = max(worst, abs(err))
        results.append(
            {
                "engine": "LocalEngine" if stage == "local" else f"ZeRO-{stage} x{m['dp']}",
                "dtype": dtype,
                "measured_bytes": m["peak_model_state_bytes"],
                "predicted_bytes": predicted,
                "relative_error": round(err, 4),
            }
        )
        print(
            f"{results[-1]['engine']:>12} {dtype:>9}: measured {m['peak_model_state_bytes'] / 1e6:7.2f} MB, "
            f"model {predicted / 1e6:7.2f} MB ({err:+.1%})"
        )
    tmp.unlink(missing_ok=True)
    out_json.write_text(
        json.dumps(
            {
                "machine": machine_info(),
                "model": TINY.__dict__,
                "cases": results,
                "worst_relative_error": worst,
                "tolerance": 0.2,
            },
            indent=1,
        )
    )
    return 0 if worst <= 0.2 else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("table")
    c = sub.add_parser("check")
    c.add_argument("--out", type=Path, default=HERE / "results" / "memory_model_cpu.json")
    w = sub.add_parser("worker")
    w.add_argument("stage")
    w.add_argument("dtype")
    w.add_argument("out", type=Path)
    a = ap.parse_args([x for x in sys.argv[1:] if not x.startswith("--local_rank")])
    if a.cmd == "table":
        print(table(MISTRAL_7B) + "\n\n" + table(LLAMA_70B, dp_total=64))
        return 0
    if a.cmd == "worker":
        worker(a.stage, a.dtype, a.out)
        return 0
    return check(a.out)


if __name__ == "__main__":
    sys.exit(main())
