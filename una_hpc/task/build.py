"""The embedded default task, built once and cached: tokenizer, SFT'd tiny base model, scored offline dataset.

    python -m una_hpc.task.build [task.dir=runs/default] [task.seed=42] [task.sft_steps=1000]
    .venv/bin/python -m pytest tests/integration/test_default_task.py tests/integration/test_task_seeds.py -x -q

A task is keyed by task.seed (its own seed: trainer.seed never reaches it) and its sizes: it lives under
`task.dir/seed-<task.seed>/`, each step in a folder named by the sizes that shape it, so builds with another seed
or other sizes sit beside it and never overwrite it. Each step is written atomically (built in a temp folder, then
renamed; `_build.json` holds its parameters, so a rerun reuses it; a changed recipe constant rebuilds it in place;
a killed build leaves no half-written step):
  tokenizer/          byte-level BPE trained on task text (una_hpc.models.tiny.train_tokenizer)
  base-sft<N>/        tiny Llama trained from scratch by N SFT steps on good and imperfect responses (HF dir)
  data-sft<N>-<P>x<R>/  train.jsonl: `task.num_prompts` P train-split prompts x `task.responses_per_prompt` R
              responses sampled from the base model at temperature 1, with the five gold attributes (HelpSteer2
              format); a response validation refuses is resampled or dropped (una_hpc.task.validity; counted in
              _build.json and the log); heldout.jsonl: `prompt` rows of the held-out split (never seen in SFT or data)
build_log.jsonl (in the seed folder) records every step as built, reused or copied. A task.dir of the earlier
layout (tokenizer/, base/ at its top, built with seed 42) is left in place; its steps are copied into the new
layout when their parameters match. Several processes may call this at once only through
una_hpc.task.defaults.fill_defaults, which holds a file lock around it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from ..config import TaskConfig, load_config
from ..data.helpsteer import combine_attributes
from ..models.tiny import tiny_llama_config, train_tokenizer
from ..trainer.evaluate import decode, generate_ids
from .grammar import QUALITIES, gold_attributes, make_response, sample_prompts, sft_examples
from .sft import SFTConfig, train_sft
from .validity import keep_valid

TASK_VERSION = 1
"""Bump when the grammar, the gold reward or a recipe constant changes: every cached step is rebuilt."""


@dataclass(frozen=True)
class TaskRecipe:
    """Fixed choices of the embedded default (sizes measured to build in minutes on 2 CPU cores)."""

    vocab_size: int = 512
    hidden_size: int = 128
    layers: int = 2
    heads: int = 2
    """head_dim = hidden_size / heads = 64 (vLLM's CPU attention needs >= 64)."""
    kv_heads: int = 1
    sft_batch_size: int = 32
    sft_lr: float = 1.5e-3
    train_pool: int = 4000
    """Distinct train-split prompts the SFT data is drawn from (the dataset uses the first task.num_prompts)."""
    heldout_prompts: int = 256
    max_new_tokens: int = 48
    gen_batch_size: int = 64
    tokenizer_texts: int = 3000
    resample_tries: int = 3
    """Rounds of resampling a response validation refuses before the row is dropped."""
    threads: int = 1
    """torch intra-op threads while building (restored afterwards; 0 = leave as is). The model is so small that a
    second thread does not pay off, and on a loaded 2-core machine it made an SFT step 5-15x slower (measured)."""


@dataclass(frozen=True)
class DefaultTask:
    dir: Path
    """task.dir/seed-<task.seed>: this task's steps and its build_log.jsonl."""
    model_dir: Path
    """The SFT'd base model: an HF dir with its tokenizer."""
    train_path: Path
    """HelpSteer2-format jsonl (prompt, response, five attributes 0-4)."""
    heldout_path: Path
    """jsonl with a `prompt` field: held-out prompts for evaluation."""

    def heldout_prompts(self) -> list[str]:
        with open(self.heldout_path) as f:
            return [json.loads(line)["prompt"] for line in f if line.strip()]


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` torch intra-op threads (0: unchanged), then restore the previous count."""
    previous = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def task_root(task_cfg: TaskConfig) -> Path:
    """The folder of the task with this seed: task.dir/seed-<task.seed>."""
    return Path(task_cfg.dir) / f"seed-{task_cfg.seed}"


def step_names(task_cfg: TaskConfig) -> dict[str, str]:
    """Step -> its folder name in task_root: named by the sizes that shape it, so other sizes never overwrite it."""
    sft = f"sft{task_cfg.sft_steps}"
    data = f"{sft}-{task_cfg.num_prompts}x{task_cfg.responses_per_prompt}"
    return {
        "tokenizer": "tokenizer",
        "base": f"base-{sft}",
        "data": f"data-{data}",
        "reward_model": f"reward_model-{data}-rm{task_cfg.rm_steps}-lr{task_cfg.rm_lr:g}",
    }


def _marker_params(folder: Path) -> dict | None:
    marker = folder / "_build.json"
    return json.loads(marker.read_text()).get("params") if marker.is_file() else None


def build_step(
    task_dir: Path,
    name: str,
    params: dict,
    build: Callable[[Path], dict],
    log: Callable[[str], None],
    legacy: Path | None = None,
) -> Path:
    """Reuse `task_dir/name` if its marker has these params; else copy `legacy` (a folder of the earlier layout)
    when its marker has them; else build it in a temp dir. Copies and builds are renamed into place."""
    params = json.loads(json.dumps(params))
    final = task_dir / name
    for stale in task_dir.glob(f".{name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    t0 = time.perf_counter()
    if _marker_params(final) == params:
        action = "reused"
    elif legacy is not None and _marker_params(legacy) == params:
        tmp = task_dir / f".{name}.tmp-{os.getpid()}"
        shutil.copytree(legacy, tmp)  # a copy: runs that point at the old folder keep working
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        action = f"copied from {legacy}"
    else:
        if final.exists():
            log(f"[task] {name}: parameters changed, rebuilding")
        tmp = task_dir / f".{name}.tmp-{os.getpid()}"
        tmp.mkdir(parents=True)
        info = build(tmp)
        (tmp / "_build.json").write_text(
            json.dumps({"params": params, "seconds": time.perf_counter() - t0, **info}, indent=1)
        )
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        action = "built"
    seconds = time.perf_counter() - t0
    log(f"[task] {name}: {action} ({seconds:.1f}s) -> {final}")
    with open(task_dir / "build_log.jsonl", "a") as f:
        f.write(json.dumps({"time": time.time(), "step": name, "action": action, "seconds": seconds}) + "\n")
    return final


def _tokenizer_texts(prompts: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(f"{seed}:tokenizer")
    texts = []
    for i in range(n):
        p = prompts[i % len(prompts)]
        texts += [p, make_response(p, QUALITIES[i % len(QUALITIES)], rng)]
    return texts


def score_distribution(prompts: list[str], scores: list[float]) -> dict:
    """Summary of dataset gold scores: mean, std, quantiles, a 10-bin histogram, mean within-prompt spread (over
    prompts with more than one response: a dropped row leaves a prompt short)."""
    q = statistics.quantiles(scores, n=10) if len(scores) > 1 else scores * 9
    by_prompt: dict[str, list[float]] = {}
    for p, s in zip(prompts, scores):
        by_prompt.setdefault(p, []).append(s)
    groups = list(by_prompt.values())
    multi = [g for g in groups if len(g) > 1]
    return {
        "n": len(scores),
        "mean": statistics.fmean(scores),
        "std": statistics.pstdev(scores),
        "deciles": [round(x, 4) for x in q],
        "histogram": [sum(1 for s in scores if min(int(s * 10), 9) == b) for b in range(10)],
        "within_prompt_std": statistics.fmean(statistics.pstdev(g) for g in multi) if multi else 0.0,
        "prompts_with_spread": sum(1 for g in groups if max(g) > min(g)) / len(groups),
    }


def train_prompt_pool(task_cfg: TaskConfig, recipe: TaskRecipe = TaskRecipe()) -> list[str]:
    """The train-split prompts of the task, in their fixed order: SFT draws from all of them, the offline dataset
    uses the first `task_cfg.num_prompts`; the rest are free for other uses (e.g. more reward-model data)."""
    return sample_prompts(max(recipe.train_pool, task_cfg.num_prompts), task_cfg.seed, "train")


def sample_scored_rows(
    model_dir: str | Path, prompts: list[str], samples_per_prompt: int, seed: int, recipe: TaskRecipe = TaskRecipe()
) -> list[dict]:
    """HelpSteer2-format rows: `samples_per_prompt` temperature-1 samples of the model per prompt (grouped by
    prompt, in order), each with its five gold attributes."""
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    repeated = [p for p in prompts for _ in range(samples_per_prompt)]
    with torch_threads(recipe.threads):
        ids = generate_ids(
            model,
            tok,
            repeated,
            max_new_tokens=recipe.max_new_tokens,
            temperature=1.0,
            batch_size=recipe.gen_batch_size,
            seed=seed,
        )
    rows = []
    for p, x in zip(repeated, ids):
        r = decode(tok, x)
        rows.append({"prompt": p, "response": r, **gold_attributes(p, r)})
    return rows


def build_default_task(
    task_cfg: TaskConfig, recipe: TaskRecipe = TaskRecipe(), log: Callable[[str], None] = print
) -> DefaultTask:
    """Build (or reuse) the embedded default task with seed task_cfg.seed under task_root(task_cfg); see the module
    docstring."""
    with torch_threads(recipe.threads), torch.random.fork_rng(devices=[]):  # the caller's RNG is left as it was
        return _build(task_cfg, recipe, log)


def _build(task_cfg: TaskConfig, recipe: TaskRecipe, log: Callable[[str], None]) -> DefaultTask:
    seed, names, legacy_dir = task_cfg.seed, step_names(task_cfg), Path(task_cfg.dir)
    task_dir = task_root(task_cfg)
    task_dir.mkdir(parents=True, exist_ok=True)
    train_prompts = train_prompt_pool(task_cfg, recipe)
    r = asdict(recipe)

    def step(name: str, params: dict, build: Callable[[Path], dict]) -> Path:
        return build_step(task_dir, names[name], params, build, log, legacy=legacy_dir / name)

    def pick(*keys: str) -> dict:  # each step's fingerprint holds only what shapes its output
        return {k: r[k] for k in keys}

    tok_params = {"version": TASK_VERSION, "seed": seed, **pick("vocab_size", "train_pool", "tokenizer_texts")}

    def build_tokenizer(out: Path) -> dict:
        tok = train_tokenizer(
            _tokenizer_texts(train_prompts, recipe.tokenizer_texts, seed), out, vocab_size=recipe.vocab_size
        )
        return {"vocab": len(tok)}

    tok_dir = step("tokenizer", tok_params, build_tokenizer)

    def build_base(out: Path) -> dict:
        tok = AutoTokenizer.from_pretrained(str(tok_dir))
        torch.manual_seed(seed)
        model = LlamaForCausalLM(
            tiny_llama_config(
                tok, hidden_size=recipe.hidden_size, layers=recipe.layers, heads=recipe.heads, kv_heads=recipe.kv_heads
            )
        )
        model.generation_config.pad_token_id = tok.pad_token_id
        cfg = SFTConfig(
            steps=task_cfg.sft_steps,
            batch_size=recipe.sft_batch_size,
            lr=recipe.sft_lr,
            seed=seed,
            log_every=max(1, -(-task_cfg.sft_steps // 5)),
        )
        pairs = sft_examples(train_prompts, task_cfg.sft_steps * recipe.sft_batch_size, seed)
        log(
            f"[task] base: SFT of a {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M-param tiny Llama, "
            f"{cfg.steps} steps x {cfg.batch_size}"
        )
        rows = train_sft(model, tok, pairs, cfg, metrics_path=out / "sft_metrics.jsonl", log=log)
        model.save_pretrained(str(out))
        tok.save_pretrained(str(out))
        return {"final_loss": rows[-1]["loss"] if rows else None}

    base_params = {
        **tok_params,
        "sft_steps": task_cfg.sft_steps,
        **pick("hidden_size", "layers", "heads", "kv_heads", "sft_batch_size", "sft_lr"),
    }
    base_dir = step("base", base_params, build_base)

    def build_data(out: Path) -> dict:
        log(f"[task] data: sampling {task_cfg.num_prompts * task_cfg.responses_per_prompt} responses at temperature 1")
        rows = sample_scored_rows(
            base_dir, train_prompts[: task_cfg.num_prompts], task_cfg.responses_per_prompt, seed, recipe
        )
        rows, counts = keep_valid(
            rows, lambda ps, s: sample_scored_rows(base_dir, ps, 1, s, recipe), seed, recipe.resample_tries
        )
        why = "".join(f"; {n} x {reason}" for reason, n in counts["reasons"].items())
        log(
            f"[task] data: {counts['rejected']} response(s) refused by validation{why}: {counts['resampled']} "
            f"resampled, {counts['dropped']} dropped"
        )
        scores = [combine_attributes(r) for r in rows]
        _write_jsonl(out / "train.jsonl", rows)
        _write_jsonl(
            out / "heldout.jsonl", [{"prompt": p} for p in sample_prompts(recipe.heldout_prompts, seed, "heldout")]
        )
        dist = score_distribution([r["prompt"] for r in rows], scores)
        log(
            f"[task] data: gold score mean {dist['mean']:.3f} std {dist['std']:.3f}, within-prompt std "
            f"{dist['within_prompt_std']:.3f}, histogram {dist['histogram']}"
        )
        return {"gold_score": dist, "validation": counts}

    data_params = {
        **base_params,
        **pick("heldout_prompts", "max_new_tokens", "gen_batch_size"),
        "num_prompts": task_cfg.num_prompts,
        "responses_per_prompt": task_cfg.responses_per_prompt,
        "valid_rows": 1,  # rows validation refuses are resampled or dropped (a data folder without it may hold some)
        **pick("resample_tries"),
    }
    data_dir = step("data", data_params, build_data)
    return DefaultTask(
        dir=task_dir, model_dir=base_dir, train_path=data_dir / "train.jsonl", heldout_path=data_dir / "heldout.jsonl"
    )


def main(argv: list[str]) -> None:
    """key=value config overrides."""
    cfg = load_config(None, argv)
    t0 = time.perf_counter()
    task = build_default_task(cfg.task)
    print(f"[task] ready in {time.perf_counter() - t0:.1f}s: model {task.model_dir}, data {task.train_path}")


if __name__ == "__main__":
    main(sys.argv[1:])
