"""`una-hpc demo` end to end at a small scale: default task build -> offline UNA-score -> eval table and plots.

    .venv/bin/python -m pytest tests/integration/test_demo.py -q

The full-size demo (`make demo`) is the same command with the quickstart's sizes; its measured result is in the
README. Here the task is shrunk so the whole pipeline runs in about a minute on 2 cores.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_demo_pipeline_small(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "una_hpc.cli",
        "demo",
        str(REPO / "configs" / "quickstart.yaml"),
        f"task.dir={tmp_path / 'task'}",
        "task.sft_steps=60",
        "task.num_prompts=16",
        "task.responses_per_prompt=2",
        "trainer.max_steps=4",
        "trainer.batch_size=8",
        "trainer.micro_batch_size=4",
        f"trainer.output_dir={out}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "eval.num_prompts=12",
        "eval.max_new_tokens=16",
        "trainer.progress=false",
        "trainer.save_every=0",
    ]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    table = [ln for ln in res.stdout.splitlines() if ln.startswith(("base ", "aligned "))]
    assert len(table) == 2, res.stdout[-2000:]
    result = json.loads((out / "eval.json").read_text())
    base = json.loads((out / "base_eval" / "eval.json").read_text())
    # Aligned and base scored on the same 12 prompts, in the same order.
    prompts = [s["prompt"] for s in base["samples"]]
    assert len(prompts) == 12 and [s["prompt"] for s in result["samples"]] == prompts
    scores = {}
    for name, r in (("aligned", result), ("base", base)):
        # The interval, recomputed from the per-prompt rewards the file records: mean +- 1.96 * std / sqrt(n).
        s = scores[name] = [x["score"] for x in r["samples"]]
        mean, half = statistics.fmean(s), 1.96 * statistics.stdev(s) / math.sqrt(12)
        g = r["gold_reward"]
        assert r["num_prompts"] == 12 and g["n"] == 12, name
        assert g["mean"] == pytest.approx(mean, abs=1e-12) and g["ci95"] == pytest.approx([mean - half, mean + half])
        # the printed table shows these numbers
        line = next(ln for ln in table if ln.startswith(name + " "))
        assert line.split()[1] == f"{g['mean']:.4f}" and f"[{g['ci95'][0]:.4f}, {g['ci95'][1]:.4f}]" in line
    # The win rate, recomputed per prompt against the base run's rewards (ties count half).
    a, b = scores["aligned"], scores["base"]
    wins, ties = sum(x > y for x, y in zip(a, b)), sum(x == y for x, y in zip(a, b))
    w = result["win_rate"]
    assert (w["wins"], w["ties"], w["losses"]) == (wins, ties, 12 - wins - ties)
    assert w["rate"] == pytest.approx((wins + 0.5 * ties) / 12)
    assert w["baseline_reward"]["mean"] == pytest.approx(base["gold_reward"]["mean"], abs=1e-12)
    assert result["kl"]["samples"] == 12 and math.isfinite(result["kl"]["mean"])  # a sampled estimate: either sign
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all("tokens_per_s" in r for r in rows)
    for png in ("eval.png", "training.png"):
        assert (out / png).stat().st_size > 1000
    assert (out / "final" / "config.json").is_file()
