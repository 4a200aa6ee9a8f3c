"""A user's work is never lost or misdirected: existing output dirs, a model without data, Hub ids, RNG state.

.venv/bin/python -m pytest tests/integration/test_user_runs.py -q
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from una_hpc.config import ConfigError, load_config
from una_hpc.trainer import run_training
from una_hpc.trainer.checkpoint import rng_state, set_rng_state

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
WORDS = "the a cat dog sat on mat one two three four five six red blue green".split()
UNA_HPC = [sys.executable, "-m", "una_hpc.cli"]


def _pairs(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    words = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    return [
        {"prompt": words(4), "chosen": words(rng.randint(2, 6)), "rejected": words(rng.randint(2, 6))} for _ in range(n)
    ]


@pytest.fixture(scope="module")
def pair_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _pairs(16)))
    return path


def _cfg(model, data, out: Path, *extra: str):
    return load_config(
        REPO / "configs/quickstart.yaml",
        [
            f"model.path={model}",
            f"data.path={data}",
            "data.format=pairwise",
            "loss.name=dpo",
            "loss.beta=0.1",
            f"trainer.output_dir={out}",
            f"data.cache_dir={out.parent / 'cache'}",
            f"task.dir={out.parent / 'task'}",
            "trainer.batch_size=4",
            "trainer.max_steps=2",
            "trainer.progress=false",
            "trainer.tensorboard=false",
            *extra,
        ],
    )


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_fresh_run_never_deletes_an_earlier_runs_work(tiny_model_dir, pair_file, tmp_path):
    out = tmp_path / "run"
    run_training(_cfg(tiny_model_dir, pair_file, out))
    before = _tree(out)
    assert any(k.startswith("checkpoints/") for k in before) and "metrics.jsonl" in before

    with pytest.raises(ConfigError) as err:
        run_training(_cfg(tiny_model_dir, pair_file, out, "trainer.max_steps=3"))
    msg = str(err.value)
    assert "\n" not in msg and "trainer.resume=true" in msg and "trainer.overwrite=true" in msg
    assert _tree(out) == before  # nothing deleted, nothing rewritten

    run_training(_cfg(tiny_model_dir, pair_file, out, "trainer.max_steps=3", "trainer.resume=true"))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]  # continued, the first two steps kept

    run_training(_cfg(tiny_model_dir, pair_file, out, "trainer.overwrite=true"))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]  # replaced, as asked
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002"]


def test_model_without_data_is_one_line_and_builds_no_toy_task(tiny_model_dir, tmp_path):
    cfg = _cfg(tiny_model_dir, "", tmp_path / "run")
    with pytest.raises(ConfigError) as err:
        run_training(cfg)
    assert "data.path" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "task").exists() and not (tmp_path / "run").exists()


def _hub_snapshot(cache: Path, repo_type: str, repo_id: str, files: dict[str, Path | str]) -> None:
    """What huggingface_hub's cache holds after a download: <type>s--org--name/{refs/main, snapshots/<sha>/...}."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(sha)
    snap = root / "snapshots" / sha
    for name, src in files.items():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, Path):
            shutil.copy(src, snap / name)
        else:
            (snap / name).write_text(src)


def test_hub_ids_resolve_offline_through_the_cache(tiny_model_dir, tmp_path):
    cache = tmp_path / "hub"
    _hub_snapshot(cache, "model", "acme/tiny-llama", {p.name: p for p in Path(tiny_model_dir).iterdir()})
    rows = "".join(json.dumps(r) + "\n" for r in _pairs(12, seed=1))
    _hub_snapshot(
        cache,
        "dataset",
        "acme/prefs",
        {"data/train_prefs-00000-of-00001.jsonl": rows, "data/test_prefs-00000-of-00001.jsonl": rows},
    )
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = tmp_path / "run"
    args = [
        "model.path=acme/tiny-llama",
        "data.path=acme/prefs",
        "data.split=train_prefs",
        "data.format=pairwise",
        "loss.name=dpo",
        f"trainer.output_dir={out}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "trainer.batch_size=4",
        "trainer.max_steps=2",
        "trainer.progress=false",
        "trainer.tensorboard=false",
    ]
    done = subprocess.run(
        [*UNA_HPC, "train", str(REPO / "configs/quickstart.yaml"), *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2

    missing = subprocess.run(
        [
            *UNA_HPC,
            "train",
            str(REPO / "configs/quickstart.yaml"),
            *args,
            "model.path=acme/not-cached",
            f"trainer.output_dir={tmp_path / 'other'}",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 1
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.path acme/not-cached" in lines[0] and "cache" in lines[0]


def test_checkpoint_rng_round_trip_includes_cuda_when_cuda_is_used(monkeypatch):
    """CPU machines have no CUDA generator: stand one in so the save/restore wiring is exercised for real."""
    cuda_state = [torch.tensor([1, 2, 3], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [t.clone() for t in cuda_state])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.extend(states))
    torch.manual_seed(3)
    state = rng_state()
    a = torch.rand(4)
    set_rng_state(state)
    assert torch.equal(torch.rand(4), a)
    assert len(restored) == 1 and torch.equal(restored[0], cuda_state[0])
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert "cuda" not in rng_state()  # CPU-only runs never touch (or initialize) CUDA
