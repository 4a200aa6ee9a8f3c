"""Faults injected for real into `una-hpc train` on a tiny model, one process (docs/faults.md): a non-finite step,
a preemption signal, a write error during a save, a planted pickle in a checkpoint.

    .venv/bin/python -m pytest tests/integration/test_faults.py -x -q      (about 2 minutes on 2 cores)
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import resource
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
TESTS = REPO / "tests"
CONFIG = REPO / "configs/quickstart.yaml"


def _args(model: Path, data: Path, out: Path, **extra) -> list[str]:
    base = {
        "model.path": model,
        "data.path": data,
        "data.format": "score",
        "trainer.output_dir": out,
        "data.cache_dir": out.parent / "cache",
        "trainer.batch_size": 8,
        "trainer.max_steps": 6,
        "trainer.progress": "false",
        "optim.lr": 1e-3,
        "loss.beta": 0.5,
        "optim.warmup_steps": 2,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _cli(args: list[str], step_s: float = 0.5, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(TESTS), "PYTHONUNBUFFERED": "1", "UNA_TEST_STEP_S": str(step_s)}
    cmd = [sys.executable, "-m", "una_hpc.cli", "train", str(CONFIG), *args]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def straight(tiny_model_dir, score_data_file, tmp_path_factory) -> list[dict]:
    """The uninterrupted 6-step curve."""
    out = tmp_path_factory.mktemp("straight") / "run"
    run_training(load_config(CONFIG, _args(tiny_model_dir, score_data_file, out)))
    return _rows(out)


def test_nonfinite_steps_are_skipped_then_stop_the_run(tiny_model_dir, score_data_file, tmp_path):
    out = tmp_path / "nan"
    hook = {"trainer.step_hook": "fault_hooks:nan_from_step_2", "trainer.max_bad_steps": 2}
    keep_all = {"trainer.save_every": 1, "trainer.keep_checkpoints": 0}
    args = _args(tiny_model_dir, score_data_file, out, **hook, **keep_all)
    p = _cli(args)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 1, err[-3000:]
    assert _errors(err) == [
        "error: step 4: 2 steps in a row had a non-finite loss or gradient norm and were skipped "
        f"(trainer.max_bad_steps=2); stopping, last good checkpoint: {out / 'checkpoints' / 'step-000003'}"
    ], err[-3000:]
    rows = _rows(out)
    assert [r["skipped"] for r in rows] == [0.0, 0.0, 1.0, 1.0]
    assert [r["skipped_steps"] for r in rows] == [0, 0, 1, 2] and rows[2]["loss"] is None
    # The skipped step 3 left weights, Adam moments and the LR schedule exactly as step 2 did.
    ckpts = out / "checkpoints"
    two, three = _digest(ckpts / "step-000002" / "engine"), _digest(ckpts / "step-000003" / "engine")
    for name in ("model.pt", "optimizer.pt", "scheduler.pt"):
        assert two[name] == three[name], name
    assert not (ckpts / "step-000004").exists()


def test_sigterm_saves_exits_0_and_resumes_to_the_same_curve(straight, tiny_model_dir, score_data_file, tmp_path):
    out = tmp_path / "preempted"
    args = _args(tiny_model_dir, score_data_file, out, **{"trainer.step_hook": "fault_hooks:slow"})
    p = _cli(args)
    deadline = time.time() + 240
    while not ((out / "metrics.jsonl").is_file() and len(_rows(out)) >= 2):
        assert p.poll() is None and time.time() < deadline, "training ended before the signal"
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    stdout, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-3000:]
    stopped = len(_rows(out))
    assert 2 <= stopped < 6, "the run finished before the signal; nothing was tested"
    ckpt = out / "checkpoints" / f"step-{stopped:06d}"
    assert ckpt.is_dir() and not (out / "final").exists()
    assert f"preempted: saved {ckpt} at step {stopped}; resume with the same command and trainer.resume=true" in stdout

    run_training(load_config(CONFIG, args + ["trainer.resume=true"]))
    resumed = _rows(out)
    assert [r["step"] for r in resumed] == list(range(1, 7))
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(straight, resumed)) < 1e-6


def test_second_signal_exits_at_once(tiny_model_dir, score_data_file, tmp_path):
    out = tmp_path / "twice"
    # Steps of 4 s: the first signal lands early in step 2's sleep, the second 0.5 s later is still inside that
    # step, before the save (with 0.5 s steps the run could save and exit between the two: measured on a fresh clone).
    p = _cli(_args(tiny_model_dir, score_data_file, out, **{"trainer.step_hook": "fault_hooks:slow"}), step_s=4.0)
    while not ((out / "metrics.jsonl").is_file() and _rows(out)):
        assert p.poll() is None, "training ended before the signal"
        time.sleep(0.05)
    p.send_signal(signal.SIGUSR1)
    time.sleep(0.5)  # two signals sent at once reach the process as one (standard signals do not queue)
    p.send_signal(signal.SIGUSR1)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGUSR1, err[-3000:]
    assert "SIGUSR1 again: exiting now without a checkpoint" in err


def _file_size_limit(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_failed_save_keeps_the_previous_checkpoint(tiny_model_dir, score_data_file, tmp_path):
    out = tmp_path / "full_disk"
    args = _args(tiny_model_dir, score_data_file, out, **{"trainer.save_every": 2, "trainer.keep_checkpoints": 1})
    run_training(load_config(CONFIG, [*args, "trainer.max_steps=2"]))
    good = out / "checkpoints" / "step-000002"
    before = _digest(good)

    # Files may not grow past 1 MB: the model (2 MB) of the step-4 save fails with EFBIG.
    p = _cli([*args, "trainer.max_steps=4", "trainer.resume=true"], preexec_fn=_file_size_limit(1 << 20))
    _, err = p.communicate(timeout=300)
    assert p.returncode == 1, err[-3000:]
    (line,) = _errors(err)
    assert line.startswith("error: saving checkpoint step-000004 failed (") and line.endswith(
        f"its partial files were removed and {good} is intact: free disk space, then resume with trainer.resume=true"
    ), err[-3000:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002"]  # no .tmp left, none pruned
    assert _digest(good) == before

    run_training(load_config(CONFIG, [*args, "trainer.max_steps=4", "trainer.resume=true"]))
    assert [r["step"] for r in _rows(out)] == [1, 2, 3, 4]


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_planted_pickle_is_refused(tiny_model_dir, score_data_file, tmp_path):
    from una_hpc.parallel import consolidate
    from una_hpc.parallel.checkpoint import CheckpointError

    out = tmp_path / "planted"
    args = _args(tiny_model_dir, score_data_file, out, **{"trainer.max_steps": 1})
    run_training(load_config(CONFIG, args))
    engine_dir = out / "checkpoints" / "step-000001" / "engine"
    marker = tmp_path / "code_ran"
    torch.save({"x": _Payload(marker)}, engine_dir / "model.pt")  # torch's own format, pickling an object
    (engine_dir / "client_state.pt").write_bytes(pickle.dumps({"x": _Payload(marker)}))  # a bare pickle

    p = _cli([*args, "trainer.max_steps=2", "trainer.resume=true"])
    _, err = p.communicate(timeout=300)
    assert p.returncode == 1 and not marker.exists(), err[-3000:]
    (line,) = _errors(err)
    assert line.startswith(f"error: {engine_dir / 'model.pt'}: refused to load, it holds pickled Python objects")
    with pytest.raises(CheckpointError, match="refused to load"):
        consolidate.consolidate_to_hf(engine_dir, tmp_path / "hf", tiny_model_dir)
    assert not marker.exists()
