"""Seeds that mean one thing: task.seed keys the embedded task, trainer.seed only the run (issue 16, item 0).

.venv/bin/python -m pytest tests/integration/test_task_seeds.py -x -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from una_hpc import train
from una_hpc.config import DataConfig
from una_hpc.data.validate import load_validated

pytestmark = pytest.mark.slow
QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"


def _stamps(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def test_three_training_seeds_share_one_fresh_seed_123_task(tmp_path):
    task_dir = tmp_path / "task"
    common = {
        "task.dir": str(task_dir),
        "task.seed": 123,  # the seed whose full-size data once held an empty response
        "task.sft_steps": 30,
        "task.num_prompts": 8,
        "task.responses_per_prompt": 2,
        "trainer.max_steps": 2,
        "trainer.batch_size": 4,
        "trainer.micro_batch_size": 4,
        "trainer.save_every": 0,
        "trainer.progress": False,
        "optim.warmup_steps": 0,
        "data.cache_dir": str(tmp_path / "cache"),
    }
    used, losses, stamps = [], [], None
    for seed in (1, 2, 3):
        out = tmp_path / f"run-{seed}"
        assert (
            train(QUICKSTART, {**common, "trainer.seed": seed, "trainer.output_dir": str(out)}) / "config.json"
        ).is_file()
        saved = yaml.safe_load((out / "config.yaml").read_text())
        used.append((saved["model"]["path"], saved["data"]["path"]))
        losses.append([json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()])
        if stamps is None:  # the first run built the task: later runs must not rewrite a file of it
            stamps = _stamps(task_dir / "seed-123")
    # One base and one dataset for all three training seeds, built once under the task seed's own folder.
    assert len(set(used)) == 1
    model_path, data_path = map(Path, used[0])
    assert model_path == task_dir / "seed-123" / "base-sft30" and data_path.parent.name == "data-sft30-8x2"
    assert [p.name for p in task_dir.iterdir() if p.name.startswith("seed-")] == ["seed-123"]
    later = _stamps(task_dir / "seed-123")
    assert {k: v for k, v in later.items() if k != "build_log.jsonl"} == {
        k: v for k, v in stamps.items() if k != "build_log.jsonl"
    }
    log = [json.loads(x) for x in (task_dir / "seed-123" / "build_log.jsonl").read_text().splitlines()]
    assert [r["action"] for r in log] == ["built"] * 3 + ["reused"] * 6
    # The training seed still changes the run (data order, sampling), and every row the builder wrote validates.
    assert losses[0] != losses[1] != losses[2]
    info = json.loads((data_path.parent / "_build.json").read_text())
    counts = info["validation"]
    assert counts["rejected"] == counts["resampled"] + counts["dropped"]
    assert len(load_validated(DataConfig(path=str(data_path), format="helpsteer2"))) == 16 - counts["dropped"]
