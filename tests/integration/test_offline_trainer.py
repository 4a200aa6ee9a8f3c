"""The offline trainer end to end on a tiny model: resume equivalence after a real kill, micro-batch equivalence,
checkpoints loadable by plain transformers, invalid data stopping before anything is written.

    .venv/bin/python -m pytest tests/integration/test_offline_trainer.py -q
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from una_hpc.config import load_config
from una_hpc.trainer import run_training

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _overrides(model: Path, data: Path, out: Path, **extra) -> list[str]:
    base = {
        "model.path": model,
        "data.path": data,
        "data.format": "score",
        "trainer.output_dir": out,
        "data.cache_dir": out.parent / "cache",
        "trainer.batch_size": 8,
        "trainer.max_steps": 6,
        "trainer.progress": "false",
        "trainer.tensorboard": "false",
        "optim.lr": 1e-3,
        "loss.beta": 0.5,
        "optim.warmup_steps": 2,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_microbatch_split_gives_the_same_curve(tiny_model_dir, score_data_file, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    run_training(load_config(REPO / "configs/quickstart.yaml", _overrides(tiny_model_dir, score_data_file, whole)))
    run_training(
        load_config(
            REPO / "configs/quickstart.yaml",
            _overrides(tiny_model_dir, score_data_file, split, **{"trainer.micro_batch_size": 3}),
        )
    )
    a, b = _losses(whole), _losses(split)
    assert len(a) == 6 and a[0] != a[-1]
    # fp32 sums over a different grouping: equal to rounding, not bitwise.
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-5, (a, b)


def test_killed_run_resumes_to_the_same_curve(tiny_model_dir, score_data_file, tmp_path):
    cfg_args = _overrides(tiny_model_dir, score_data_file, tmp_path / "straight", **{"trainer.max_steps": 12})
    run_training(load_config(REPO / "configs/quickstart.yaml", cfg_args))
    straight = _losses(tmp_path / "straight")

    out = tmp_path / "killed"
    args = _overrides(tiny_model_dir, score_data_file, out, **{"trainer.max_steps": 12, "trainer.save_every": 2})
    cmd = [sys.executable, "-m", "una_hpc.cli", "train", str(REPO / "configs/quickstart.yaml"), *args]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while not (out / "checkpoints" / "step-000004").is_dir():
        assert proc.poll() is None and time.time() < deadline, "training ended before the kill"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode != 0
    done = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert "step-000012" not in done, "the run finished before it was killed; nothing was tested"

    run_training(load_config(REPO / "configs/quickstart.yaml", args + ["trainer.resume=true"]))
    resumed = _losses(out)
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == list(range(1, 13))
    assert max(abs(x - y) for x, y in zip(straight, resumed)) < 1e-6, (straight, resumed)


def test_checkpoint_loads_in_plain_transformers(tiny_model_dir, score_data_file, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "run"
    final = run_training(
        load_config(
            REPO / "configs/quickstart.yaml",
            _overrides(tiny_model_dir, score_data_file, out, **{"model.lora_rank": 4, "trainer.max_steps": 2}),
        )
    )
    for d in (final, out / "checkpoints" / "step-000002" / "model"):
        model = AutoModelForCausalLM.from_pretrained(str(d))
        tok = AutoTokenizer.from_pretrained(str(d))
        ids = tok("the cat sat", return_tensors="pt").input_ids
        gen = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
        assert gen.shape[1] > ids.shape[1]
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    trained = AutoModelForCausalLM.from_pretrained(str(final))
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(base.state_dict()[q], trained.state_dict()[q]), "LoRA update was not merged on export"


def test_invalid_data_exits_1_and_writes_nothing(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "response": "r", "score": 0.3}\n{"prompt": "p", "response": "", "score": 1.7}\n')
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "una_hpc.cli",
        "train",
        str(REPO / "configs/quickstart.yaml"),
        *_overrides(tiny_model_dir, bad, out),
    ]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1
    assert f"{bad}:2: field 'response'" in res.stderr and f"{bad}:2: field 'score'" in res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_time_budget_ends_the_run_as_if_max_steps_were_reached(
    tiny_model_dir, score_data_file, tmp_path, capsys, monkeypatch
):
    """trainer.max_time_s: the step that crosses the budget is the last one, logged, checkpointed and exported, and
    its curve is an uninterrupted run's up to that step (same data order, same schedule)."""
    timed, full = tmp_path / "timed", tmp_path / "full"
    # Each step sleeps 2 s in the step hook: the 3 s budget is crossed at step 2 unless a step computes for > 1 s.
    monkeypatch.setenv("UNA_TEST_STEP_S", "2.0")
    slow = {"trainer.max_time_s": 3.0, "trainer.step_hook": "fault_hooks:slow"}
    final = run_training(
        load_config(REPO / "configs/quickstart.yaml", _overrides(tiny_model_dir, score_data_file, timed, **slow))
    )
    steps = [json.loads(line)["step"] for line in (timed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2] and final == timed / "final" and (final / "config.json").is_file()
    assert "trainer.max_time_s=3 spent: the run ends at step 2" in capsys.readouterr().out
    assert sorted(p.name for p in (timed / "checkpoints").iterdir()) == ["step-000002"]
    run_training(load_config(REPO / "configs/quickstart.yaml", _overrides(tiny_model_dir, score_data_file, full)))
    assert _losses(timed) == _losses(full)[:2]
