"""Online UNA and PPO under faults (docs/faults.md), HF rollout engine on a tiny model, one process: a NaN
micro-batch at step 3 is skipped, SIGTERM to a running `una-hpc train` saves and exits 0, and the resumed run
(prompt position, sampling seeds, engine and critic state) gives the uninterrupted curve.

    .venv/bin/python -m pytest tests/integration/test_faults_online.py -x -q      (about 1.5 minutes on 2 cores)
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
from text_corpus import scored_rows, write_jsonl

from una_hpc.config import load_config
from una_hpc.trainer import run_training

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
STEPS = 5
HOOKS = {"online_una.yaml": "nan_at_step_2", "online_ppo.yaml": "nan_reward_at_step_2"}


def _args(model: Path, data: Path, out: Path, hook: str, config: str) -> list[str]:
    return [
        f"model.path={model}",
        f"data.path={data}",
        "data.format=score",
        f"trainer.output_dir={out}",
        "trainer.progress=false",
        f"trainer.max_steps={STEPS}",
        "rollout.engine=hf",
        "rollout.reward_fn=reward_fns:cat_fraction",
        "rollout.prompts_per_step=2",
        "rollout.samples_per_prompt=2",
        "rollout.max_new_tokens=8",
        *(["loss.reward_normalize=none"] if config == "online_una.yaml" else ["ppo.epochs=1"]),
        f"trainer.step_hook=fault_hooks:{hook}",
    ]


def _rows(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@pytest.mark.parametrize("config", ["online_una.yaml", "online_ppo.yaml"])
def test_online_nan_step_and_sigterm_resume(config, tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "prompts.jsonl", scored_rows(8, 1, seed=1))
    cfg_path, hook = REPO / "configs" / config, HOOKS[config]
    straight = tmp_path / "straight"
    run_training(load_config(cfg_path, _args(tiny_model_dir, data, straight, hook, config)))

    out = tmp_path / "preempted"
    args = _args(tiny_model_dir, data, out, f"slow_{hook}", config)
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "una_hpc.cli", "train", str(cfg_path), *args]
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while len(_rows(out)) < 3:  # after the skipped step 3
        assert p.poll() is None and time.time() < deadline, "training ended before the signal"
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    stdout, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-3000:]
    stopped = len(_rows(out))
    assert 3 <= stopped < STEPS and f"at step {stopped}; resume with" in stdout, (stopped, stdout[-2000:])

    run_training(load_config(cfg_path, [*args[:-1], f"trainer.step_hook=fault_hooks:{hook}", "trainer.resume=true"]))
    a, b = _rows(straight), _rows(out)
    assert [r["step"] for r in b] == list(range(1, STEPS + 1))
    assert [r["skipped"] for r in a] == [r["skipped"] for r in b] == [0, 0, 1, 0, 0]
    assert a[2]["loss"] is None and b[2]["loss"] is None
    for x, y in zip(a, b):
        if x["loss"] is not None:
            assert x["loss"] == pytest.approx(y["loss"], abs=1e-6), (x, y)
            assert x["rm_reward"] == pytest.approx(y["rm_reward"], abs=1e-6), (x, y)
