"""The real trainer under the launcher: `launch/cpu.sh configs/parallel/zero3.yaml ...` (2 processes, ZeRO-3, gloo)
gives the single-process curve of the same config, and its final export loads in transformers.

    .venv/bin/python -m pytest tests/distributed/test_trainer_launch.py -q      (about 70 s on 2 cores)
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from dist_helpers import REPO, free_port

pytestmark = pytest.mark.slow


def overrides(model: Path, data: Path, out: Path) -> list[str]:
    return [
        f"model.path={model}",
        f"data.path={data}",
        "data.format=score",
        f"trainer.output_dir={out}",
        f"data.cache_dir={out.parent / 'cache'}",
        "trainer.batch_size=8",
        "trainer.micro_batch_size=2",
        "trainer.max_steps=4",
        "trainer.save_every=0",
        "trainer.progress=false",
        "trainer.tensorboard=false",
        "optim.lr=1e-3",
        "optim.warmup_steps=2",
        "loss.beta=0.5",
    ]


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_zero3_trainer_launch_matches_single_process(tiny_tp_model_dir, score_data_file, tmp_path):
    from transformers import AutoModelForCausalLM

    from una_hpc.config import load_config
    from una_hpc.trainer import run_training

    data = score_data_file
    config = REPO / "configs" / "parallel" / "zero3.yaml"
    port = free_port()
    env = {**os.environ, "NPROC": "2", "MASTER_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    p = subprocess.run(
        ["bash", str(REPO / "launch" / "cpu.sh"), str(config), *overrides(tiny_tp_model_dir, data, tmp_path / "zero3")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
    # DeepSpeed's CPU all-reduce workspaces (66 MB per rank in RAM) are not left behind in /dev/shm
    assert not list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))
    assert "all_gather_into_tensor` is deprecated" not in p.stderr  # DeepSpeed's torch deprecations stay quiet

    os.environ.pop("WORLD_SIZE", None)  # backend auto -> the single-process LocalEngine
    run_training(load_config(config, overrides(tiny_tp_model_dir, data, tmp_path / "single")))
    ds, single = rows(tmp_path / "zero3"), rows(tmp_path / "single")
    assert len(ds) == len(single) == 4 and single[-1]["loss"] != single[0]["loss"]
    for a, b in zip(ds, single):
        assert a["loss"] == pytest.approx(b["loss"], rel=2e-5), (a, b)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=2e-5), (a, b)
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-12)
    AutoModelForCausalLM.from_pretrained(tmp_path / "zero3" / "final")  # the consolidated ZeRO-3 export loads
