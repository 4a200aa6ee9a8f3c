"""One training step on every TRL dataset type and shape with `data.format: auto` (tests/data/trl, 3 rows each).

    .venv/bin/python -m pytest tests/integration/test_trl_types.py -x -q

The first step's loss is taken before any update, where the policy equals its frozen reference (r = 0 exactly), so
each loss is known by hand: DPO log 2; UNA-binary and UNA-score (sigmoid(0) - target)^2; KTO 0.5 per example
(z = 0). Prompt-only types train through online UNA (HF generation, a reward function from tests/reward_fns.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from una_hpc.config import load_config
from una_hpc.data import DataError
from una_hpc.trainer import run_training

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
TRL = REPO / "tests" / "data" / "trl"
LOG2 = math.log(2.0)
UF = [1.0, 0.0, 2 / 3, 1 / 3, 0.5, 0.5]
"""score_chosen / score_rejected of *_preference_scores.jsonl ((10, 1), (7, 4), (5.5, 5.5)), 1..10 -> [0, 1]."""


def _mse(targets: list[float]) -> float:
    return sum((0.5 - t) ** 2 for t in targets) / len(targets)


def _run(model: Path, data: Path, out: Path, *extra: str) -> list[dict]:
    cfg = load_config(
        REPO / "configs/quickstart.yaml",
        [
            f"model.path={model}",
            f"data.path={data}",
            f"trainer.output_dir={out}",
            f"data.cache_dir={out.parent / 'cache'}",
            f"task.dir={out.parent / 'task'}",
            "trainer.max_steps=1",
            "trainer.micro_batch_size=0",
            "optim.warmup_steps=0",
            "trainer.save_every=0",
            "trainer.progress=false",
            "trainer.tensorboard=false",
            *extra,
        ],
    )
    assert cfg.data.format == "auto"
    run_training(cfg)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# (file, loss, batch size = every example the view gives, expected first-step loss)
OFFLINE = [
    ("standard_preference", "dpo", 3, LOG2),
    ("standard_preference_implicit", "dpo", 3, LOG2),
    ("conversational_preference", "dpo", 3, LOG2),
    ("conversational_preference_implicit", "dpo", 3, LOG2),
    ("standard_unpaired", "una_binary", 3, _mse([1.0, 0.0, 1.0])),
    ("conversational_unpaired", "kto", 3, 0.5),
    ("standard_scored", "una_score", 3, _mse([0.9, 0.2, 0.5])),
    ("conversational_scored", "una_score", 3, _mse([0.9, 0.2, 0.5])),
    ("standard_helpsteer2", "una_score", 3, None),
    ("standard_preference_scores", "una_score", 6, _mse(UF)),
    ("conversational_preference_scores", "una_score", 6, _mse(UF)),
    ("standard_preference_scores", "mixed", 9, LOG2 + _mse(UF)),
    ("conversational_preference_scores", "dpo", 3, LOG2),
]


@pytest.mark.parametrize("name, loss, batch, want", OFFLINE, ids=[f"{n}-{loss}" for n, loss, _, _ in OFFLINE])
def test_one_offline_step(tiny_model_dir, tmp_path, name, loss, batch, want):
    rows = _run(
        tiny_model_dir, TRL / f"{name}.jsonl", tmp_path / "run", f"loss.name={loss}", f"trainer.batch_size={batch}"
    )
    assert [r["step"] for r in rows] == [1] and math.isfinite(rows[0]["loss"])
    if want is not None:
        assert rows[0]["loss"] == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize(
    "name",
    [
        "standard_prompt_only",
        "conversational_prompt_only",
        "standard_prompt_completion",
        "conversational_language_modeling",
    ],
)
def test_one_online_step_on_prompts(tiny_model_dir, tmp_path, name, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "tests"))  # reward_fns
    rows = _run(
        tiny_model_dir,
        TRL / f"{name}.jsonl",
        tmp_path / "run",
        "loss.name=una_online",
        "rollout.engine=hf",
        "rollout.reward_fn=reward_fns:cat_fraction",
        "loss.reward_normalize=none",
        "rollout.prompts_per_step=2",
        "rollout.samples_per_prompt=2",
        "rollout.max_new_tokens=8",
        "trainer.batch_size=4",
    )
    assert [r["step"] for r in rows] == [1] and math.isfinite(rows[0]["loss"])


def test_prompts_only_cannot_train_offline_and_write_nothing(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(DataError) as err:
        _run(tiny_model_dir, TRL / "standard_prompt_only.jsonl", out, "loss.name=dpo", "trainer.batch_size=2")
    assert "standard prompt-only data (columns prompt) has no feedback" in str(err.value)
    assert not (out / "metrics.jsonl").exists() and not (out / "final").exists()
