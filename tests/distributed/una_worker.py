"""Worker for the DeepSpeed engine tests: UNA-score steps on a tiny Llama with fixed data, through TrainEngine only.

    UNA_ENTRY=tests/distributed/una_worker.py launch/cpu.sh SCENARIO MODEL_DIR OUT
    (= DS_ACCELERATOR=cpu deepspeed --num_gpus 2 --no_local_rank tests/distributed/una_worker.py SCENARIO ...)

SCENARIO: zero2 | zero3_kill | zero3_resume | tp2. Rank 0 writes OUT/SCENARIO.json; where a scenario needs the
single-process reference, rank 0 also runs a LocalEngine on the same global batch after the DeepSpeed part.
`zero3_kill` saves a checkpoint after step 3, runs step 4's backward and then SIGKILLs every rank.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LlamaForCausalLM

from una_hpc.config import Config
from una_hpc.losses import LOSSES, SCORE, SeqTargets
from una_hpc.parallel import build_engine, consolidate_to_hf, reference_seq_logps
from una_hpc.parallel.local_engine import LocalEngine

GLOBAL_BATCH, MICRO_PER_RANK, STEPS, KILL_AFTER = 8, 2, 5, 3


def make_cfg(zero_stage: int, tp_size: int) -> Config:
    cfg = Config()
    cfg.parallel.backend, cfg.parallel.zero_stage, cfg.parallel.tp_size = "deepspeed", zero_stage, tp_size
    cfg.parallel.dist_backend = "gloo"  # CPU tensors throughout, also on a machine with a GPU
    cfg.optim.lr, cfg.optim.warmup_steps, cfg.optim.schedule = 2e-3, 2, "cosine"
    cfg.optim.weight_decay, cfg.optim.max_grad_norm = 0.01, 1.0
    cfg.trainer.max_steps = STEPS
    cfg.loss.name, cfg.loss.beta = "una_score", 0.5
    return cfg


@dataclass
class Micro:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    seq_index: torch.Tensor
    targets: SeqTargets
    example: torch.Tensor  # global example ids
    ref: torch.Tensor | None = None


def global_batch(vocab: int, pad_id: int, seed: int = 1234) -> list[dict]:
    """8 fixed examples: random prompt + response tokens, prompt masked, score targets in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(GLOBAL_BATCH):
        n = int(torch.randint(6, 13, (1,), generator=g))
        ids = torch.randint(5, vocab, (n,), generator=g)
        rows.append({"ids": ids, "prompt": 3, "score": float(torch.rand((), generator=g)), "id": i})
    return rows


def collate(rows: list[dict], pad_id: int) -> Micro:
    L = max(len(r["ids"]) for r in rows)
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), L), dtype=torch.long)
    labels = torch.full((len(rows), L), -100, dtype=torch.long)
    for b, r in enumerate(rows):
        n = len(r["ids"])
        ids[b, :n], mask[b, :n] = r["ids"], 1
        labels[b, r["prompt"] - 1 : n - 1] = r["ids"][r["prompt"] : n]  # position t predicts token t + 1
    seq_index = torch.arange(len(rows)).unsqueeze(1).expand(-1, L)
    kind = torch.full((len(rows),), SCORE, dtype=torch.long)
    targets = SeqTargets(kind, torch.full_like(kind, -1), torch.tensor([r["score"] for r in rows]))
    return Micro(ids, mask, labels, seq_index, targets, torch.tensor([r["id"] for r in rows]))


def split(rows: list[dict], dp_rank: int, dp_world: int, micro: int, pad_id: int) -> list[Micro]:
    per = len(rows) // dp_world
    mine = rows[dp_rank * per : (dp_rank + 1) * per]
    size = max(len(mine) // micro, 1)
    return [collate(mine[i : i + size], pad_id) for i in range(0, len(mine), size)]


def load_model(model_dir: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)


@torch.no_grad()
def plain_logps(model, micros: list[Micro]) -> torch.Tensor:
    """Per-example logps by a plain HF forward + the torch reference, indexed by global example id."""
    out = torch.zeros(GLOBAL_BATCH)
    for m in micros:
        h = model.model(input_ids=m.input_ids, attention_mask=m.attention_mask).last_hidden_state
        lp, _ = reference_seq_logps(
            h.reshape(-1, h.shape[-1]),
            model.lm_head.weight,
            m.labels.reshape(-1),
            m.seq_index.reshape(-1),
            len(m.example),
        )
        out[m.example] = lp
    return out


@torch.no_grad()
def engine_logps(engine, m: Micro) -> torch.Tensor:
    """Evaluation without gathered_params: under ZeRO-3 seq_logps gathers the lm_head and releases it at once."""
    hidden = engine.hidden_states(input_ids=m.input_ids, attention_mask=m.attention_mask)
    return engine.seq_logps(hidden, m.labels, m.seq_index, len(m.example))[0]


def micro_backward(engine, cfg: Config, m: Micro, counts: dict, gather: str) -> float:
    """One micro-batch. `gather` is where the lm_head is gathered under ZeRO-3 (a no-op elsewhere):
    "all" = gathered_params around forward, kernel and backward (the trainer's pattern), "kernel" = around the
    kernel and its backward only, "engine" = no gathered_params: seq_logps gathers and backward releases."""
    head = LOSSES[cfg.loss.name]
    outer = engine.gathered_params([engine.output_weight()]) if gather == "all" else contextlib.nullcontext()
    with outer:
        hidden = engine.hidden_states(input_ids=m.input_ids, attention_mask=m.attention_mask)
        inner = engine.gathered_params([engine.output_weight()]) if gather == "kernel" else contextlib.nullcontext()
        with inner:
            logps, _ = engine.seq_logps(hidden, m.labels, m.seq_index, len(m.example))
            loss = head.loss(head(logps, m.ref, m.targets, cfg.loss), counts, cfg.loss)
            engine.backward(loss)
    return float(loss.detach())


def run_steps(
    engine, cfg: Config, micros: list[Micro], steps: range, on_backward=None, gather: str = "all"
) -> list[dict]:
    """Optimizer steps; each record holds the global loss (summed over data-parallel ranks), grad norm and lr."""
    rows = []
    for step in steps:
        counts = engine.sum_over_dp({"score": sum(len(m.example) for m in micros)})
        local = sum(micro_backward(engine, cfg, m, counts, gather) for m in micros)
        loss = engine.sum_over_dp({"loss": local})["loss"]
        if on_backward is not None:
            on_backward(step)
        stats = engine.step()
        rows.append({"step": step + 1, "loss": loss, **stats})
    return rows


def local_reference(model_dir: str, cfg: Config, rows: list[dict], ref_all: torch.Tensor, pad_id: int) -> dict:
    model = load_model(model_dir)
    engine = LocalEngine(model, cfg)
    micros = split(rows, 0, 1, MICRO_PER_RANK, pad_id)
    for m in micros:
        m.ref = ref_all[m.example]
    first = {}

    def grab(step):
        if step == 0:
            first["lm_head_grad"] = model.lm_head.weight.grad.clone()

    init = plain_logps(model, micros)
    curve = run_steps(engine, cfg, micros, range(STEPS), grab)
    return {"curve": curve, "init_logps": init, "lm_head_grad": first["lm_head_grad"]}


def main() -> None:
    t0 = time.perf_counter()
    # launch/cpu.sh appends `parallel.dist_backend=gloo` after the first argument: positional args only
    scenario, model_dir, out = [a for a in sys.argv[1:] if "=" not in a][:3]
    out = Path(out)
    stage, tp = {"zero2": (2, 1), "zero3_kill": (3, 1), "zero3_resume": (3, 1), "tp2": (0, 2)}[scenario]
    cfg = make_cfg(stage, tp)
    base = load_model(model_dir)
    pad_id = base.config.pad_token_id
    rows = global_batch(base.config.vocab_size, pad_id)
    ref_all = plain_logps(base, [collate(rows, pad_id)])  # reference = the initial policy
    engine = build_engine(load_model(model_dir), cfg)
    micros = split(rows, engine.dp_rank, engine.dp_world_size, MICRO_PER_RANK, pad_id)
    for m in micros:
        m.ref = ref_all[m.example]
    w = engine.output_weight()
    result: dict = {
        "lm_head_shape": list(w.shape),
        "lm_head_tp_shard": bool(getattr(w, "tensor_model_parallel", 0)),
        "q_proj_shape": list(engine.module.model.layers[0].self_attn.q_proj.weight.shape),
        "seconds": {"init": time.perf_counter() - t0},
    }
    result |= {
        "scenario": scenario,
        "world_size": engine.world_size,
        "dp_world_size": engine.dp_world_size,
        "tp_size": engine.tp_size,
        "engine": type(engine).__name__,
    }
    ckpt = out / f"{scenario.split('_')[0]}_ckpt"

    with torch.no_grad():
        init = torch.zeros(GLOBAL_BATCH)
        for m in micros:
            init[m.example] = engine_logps(engine, m)
    init = torch.tensor(list(engine.sum_over_dp({str(i): float(v) for i, v in enumerate(init)}).values()))
    result["init_logps"] = init.tolist()  # TP ranks of one replica hold the same examples: summed over dp only

    grads = {}

    def grab_grad(step):
        if step == 0:
            from deepspeed.utils import safe_get_full_grad

            w = engine.output_weight()
            g = safe_get_full_grad(w)
            grads["lm_head_grad"] = None if g is None else g.detach().clone()

    if scenario == "zero3_resume":
        client = engine.load_checkpoint(ckpt)
        result["client_state"] = client
        curve = run_steps(engine, cfg, micros, range(client["step"], STEPS), gather="engine")
    elif scenario == "zero3_kill":
        curve = run_steps(engine, cfg, micros, range(KILL_AFTER), grab_grad, gather="all")
        engine.save_checkpoint(ckpt, {"step": KILL_AFTER})
    else:
        curve = run_steps(engine, cfg, micros, range(STEPS), gather="kernel")
    result["curve"] = curve
    result["seconds"]["train"] = time.perf_counter() - t0

    if scenario in ("zero3_resume", "tp2", "zero2"):
        engine.save_checkpoint(out / f"{scenario}_final_ckpt", {"step": STEPS})
        hf_dir = out / f"{scenario}_hf"
        consolidate_to_hf(engine, hf_dir, model_dir)
        with torch.no_grad():
            final = torch.zeros(GLOBAL_BATCH)
            for m in micros:
                final[m.example] = engine_logps(engine, m)
        keys = {str(i): float(v) for i, v in enumerate(final)}
        result["final_logps"] = list(engine.sum_over_dp(keys).values())
        result["hf_dir"] = str(hf_dir)
        result["seconds"]["save_consolidate"] = time.perf_counter() - t0

    if engine.is_main:
        if scenario in ("zero2", "zero3_kill", "tp2"):
            ref = local_reference(model_dir, cfg, rows, ref_all, pad_id)
            result["local_curve"] = ref["curve"]
            result["local_init_logps"] = ref["init_logps"].tolist()
            if grads.get("lm_head_grad") is not None:
                result["lm_head_grad_max_err"] = float((grads["lm_head_grad"] - ref["lm_head_grad"]).abs().max())
                result["lm_head_grad_max"] = float(ref["lm_head_grad"].abs().max())
        result["seconds"]["total"] = time.perf_counter() - t0
        (out / f"{scenario}.json").write_text(json.dumps(result, indent=1))
    engine.barrier()
    if scenario == "zero3_kill":  # a crash in the middle of the next step, after its backward
        counts = engine.sum_over_dp({"score": sum(len(m.example) for m in micros)})
        for m in micros:
            micro_backward(engine, cfg, m, counts, "all")
        engine.barrier()
        os.kill(os.getpid(), signal.SIGKILL)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
