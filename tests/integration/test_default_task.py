"""The embedded default task end to end at a very small scale: artifacts, data validity, caching.

.venv/bin/python -m pytest tests/integration/test_default_task.py -q
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from una_hpc.config import DataConfig, TaskConfig
from una_hpc.data.validate import load_validated
from una_hpc.task.build import TaskRecipe, build_default_task
from una_hpc.task.grammar import ATTRIBUTES, gold_attributes, parse_prompt
from una_hpc.trainer.evaluate import generate

pytestmark = pytest.mark.slow

RECIPE = TaskRecipe(train_pool=300, heldout_prompts=24, tokenizer_texts=300, max_new_tokens=16)


def _actions(task_dir) -> list[tuple[str, str]]:
    with open(task_dir / "build_log.jsonl") as f:
        return [(r["step"], r["action"]) for r in map(json.loads, f)]


def test_default_task_builds_validates_and_caches(tmp_path):
    task_dir = tmp_path / "task" / "seed-3"  # the task of task.seed=3 lives in its own folder
    (task_dir / ".base-sft40.tmp-99999").mkdir(parents=True)  # debris of a killed build: never used, cleaned up
    (task_dir / ".base-sft40.tmp-99999" / "config.json").write_text("{}")
    cfg = TaskConfig(dir=str(tmp_path / "task"), seed=3, sft_steps=40, num_prompts=8, responses_per_prompt=2)
    lines: list[str] = []
    t0 = time.perf_counter()
    task = build_default_task(cfg, recipe=RECIPE, log=lines.append)
    assert time.perf_counter() - t0 < 60
    assert _actions(task_dir) == [("tokenizer", "built"), ("base-sft40", "built"), ("data-sft40-8x2", "built")]
    assert not list(task_dir.glob(".*.tmp-*"))
    assert task.dir == task_dir and task.model_dir == task_dir / "base-sft40"

    # the base model is a plain HF dir with its tokenizer and chat template
    tok = AutoTokenizer.from_pretrained(str(task.model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(task.model_dir))
    assert tok.chat_template and model.config.head_dim == 64
    assert len(generate(model, tok, ["add 1 and 2"], max_new_tokens=4)) == 1
    sft = [json.loads(x) for x in (task.model_dir / "sft_metrics.jsonl").read_text().splitlines()]
    assert sft[-1]["step"] == 40 and sft[-1]["loss"] < sft[0]["loss"]

    # the dataset passes the data layer's validation as helpsteer2 and its attributes are the gold ones
    ds = load_validated(DataConfig(path=str(task.train_path), format="helpsteer2"), tokenizer=tok, max_length=256)
    assert len(ds) == 16 and set(ds.column_names) == {"prompt", "response", *ATTRIBUTES}
    rows = ds.to_list()
    assert set(Counter(r["prompt"] for r in rows).values()) == {2}
    for r in rows:
        assert {a: r[a] for a in ATTRIBUTES} == gold_attributes(r["prompt"], r["response"])
    heldout = task.heldout_prompts()
    assert len(heldout) == 24 and not set(heldout) & {r["prompt"] for r in rows}
    for p in heldout:
        parse_prompt(p)
    stats = json.loads((task.train_path.parent / "_build.json").read_text())["gold_score"]
    assert stats["n"] == 16 and sum(stats["histogram"]) == 16

    # a rerun reuses every step: nothing retrained, files untouched
    stamp = (task.model_dir / "model.safetensors").stat().st_mtime_ns
    data_stamp = task.train_path.stat().st_mtime_ns
    again = build_default_task(cfg, recipe=RECIPE, log=lines.append)
    assert again == task
    assert _actions(task_dir)[3:] == [("tokenizer", "reused"), ("base-sft40", "reused"), ("data-sft40-8x2", "reused")]
    assert (task.model_dir / "model.safetensors").stat().st_mtime_ns == stamp
    assert task.train_path.stat().st_mtime_ns == data_stamp

    # a changed dataset size builds only a dataset of its own beside the first, which stays untouched; a step
    # folder without its marker counts as unfinished
    cfg.num_prompts = 4
    small = build_default_task(cfg, recipe=RECIPE, log=lines.append)
    steps = [("tokenizer", "reused"), ("base-sft40", "reused"), ("data-sft40-4x2", "built")]
    assert _actions(task_dir)[6:] == steps
    assert len(small.train_path.read_text().splitlines()) == 8 and small.model_dir == task.model_dir
    assert task.train_path.stat().st_mtime_ns == data_stamp
    (small.train_path.parent / "_build.json").unlink()
    build_default_task(cfg, recipe=RECIPE, log=lines.append)
    assert _actions(task_dir)[-1] == ("data-sft40-4x2", "built")
    assert (task.model_dir / "model.safetensors").stat().st_mtime_ns == stamp
    assert any("reused" in line for line in lines)

    # A task.dir of the earlier layout (steps at its top): steps whose parameters match are copied into the seed
    # folder, the old folders stay for runs that point at them; data is rebuilt (its rows are now validated).
    legacy = tmp_path / "task"
    shutil.move(task_dir / "tokenizer", legacy / "tokenizer")
    shutil.move(task.model_dir, legacy / "base")
    shutil.rmtree(task_dir)
    build_default_task(cfg, recipe=RECIPE, log=lines.append)
    assert _actions(task_dir) == [
        ("tokenizer", f"copied from {legacy / 'tokenizer'}"),
        ("base-sft40", f"copied from {legacy / 'base'}"),
        ("data-sft40-4x2", "built"),
    ]
    assert (legacy / "base" / "model.safetensors").is_file() and (task.model_dir / "model.safetensors").is_file()
