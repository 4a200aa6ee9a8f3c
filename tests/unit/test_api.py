"""The Python API: `from una_hpc import Config, load_config, train, evaluate` runs what the CLI runs.

.venv/bin/python -m pytest tests/unit/test_api.py -q
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

import una_hpc
from una_hpc import Config, ConfigError, evaluate, load_config, resolve_config, train

REPO = Path(__file__).resolve().parents[2]
WORDS = "the a cat dog sat on mat one two three four five six red blue green".split()
HEAVY = ("torch", "transformers", "deepspeed", "vllm", "datasets", "peft", "triton")


def test_import_una_hpc_is_light():
    code = (
        "import sys, una_hpc; from una_hpc import Config, train, evaluate, load_config; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout


def test_resolve_config_takes_a_config_a_path_or_nothing(tmp_path):
    assert una_hpc.Config is Config and una_hpc.load_config is load_config
    assert resolve_config() == Config()
    cfg = Config()
    out = resolve_config(cfg, {"trainer.max_steps": 3, "data.path": tmp_path / "d.jsonl"}, loss={"name": "dpo"})
    assert (out.trainer.max_steps, out.data.path, out.loss.name) == (3, str(tmp_path / "d.jsonl"), "dpo")
    assert cfg == Config()  # the caller's config is never changed
    p = tmp_path / "c.yaml"
    p.write_text("trainer:\n  max_steps: 7\n")
    assert resolve_config(p, ["loss.beta=0.5"]).loss.beta == 0.5 and resolve_config(p).trainer.max_steps == 7
    with pytest.raises(ConfigError) as e:  # the same checks as load_config, every problem at once
        resolve_config(cfg, ["rollout.top_p=2"], parallel={"zero_stage": 9, "tp_sise": 2})
    assert len(e.value.problems) == 1 and "tp_sise" in e.value.problems[0]
    with pytest.raises(ConfigError) as e:
        resolve_config(cfg, ["rollout.top_p=2"], parallel={"zero_stage": 9})
    assert [m.split(":")[0] for m in e.value.problems] == ["config key parallel.zero_stage", "config key rollout.top_p"]


def test_train_and_evaluate_run_what_the_cli_handlers_run(monkeypatch, tmp_path):
    import una_hpc.cli as cli

    seen = []
    monkeypatch.setattr(cli, "run_train", lambda cfg: seen.append(("train", cfg)) or tmp_path / "final")
    monkeypatch.setattr(cli, "run_evaluate", lambda cfg: seen.append(("eval", cfg)) or {"kl": 0.0})
    assert train(REPO / "configs/quickstart.yaml", ["trainer.max_steps=3"]) == tmp_path / "final"
    assert evaluate(REPO / "configs/quickstart.yaml") == {"kl": 0.0}
    assert cli.main(["train", str(REPO / "configs/quickstart.yaml"), "trainer.max_steps=3"]) == 0
    assert cli.main(["eval", str(REPO / "configs/quickstart.yaml")]) == 0
    assert [k for k, _ in seen] == ["train", "eval", "train", "eval"]
    assert seen[0][1] == seen[2][1] and seen[1][1] == seen[3][1]  # the same config, however it came in


@pytest.fixture(scope="module")
def user_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("api_data")
    rng = random.Random(0)

    def words(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    pairs = [
        {"prompt": words(4), "chosen": words(rng.randint(2, 6)), "rejected": words(rng.randint(2, 6))}
        for _ in range(16)
    ]
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    (root / "prompts.jsonl").write_text("".join(json.dumps({"prompt": words(4)}) + "\n" for _ in range(4)))
    return {"pairs": root / "pairs.jsonl", "prompts": root / "prompts.jsonl"}


def _overrides(model: Path, files: dict[str, Path], out: Path) -> list[str]:
    return [
        f"model.path={model}",
        f"data.path={files['pairs']}",
        "data.format=pairwise",
        "loss.name=dpo",
        "loss.beta=0.1",
        f"data.eval_path={files['prompts']}",
        f"trainer.output_dir={out}",
        f"data.cache_dir={out.parent / (out.name + '-cache')}",
        f"task.dir={out.parent / 'task'}",
        "trainer.batch_size=4",
        "trainer.micro_batch_size=2",
        "trainer.max_steps=2",
        "optim.warmup_steps=0",
        "trainer.progress=false",
        "eval.num_prompts=4",
        "eval.max_new_tokens=8",
    ]


def _rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "step_s")} for r in rows]  # all but wall-clock


@pytest.mark.slow
def test_train_and_evaluate_through_the_api_equal_the_cli(tiny_model_dir, user_files, tmp_path):
    from una_hpc.cli import main

    config = REPO / "configs/quickstart.yaml"
    cli_out, api_out = tmp_path / "cli", tmp_path / "api"
    assert main(["train", str(config), *_overrides(tiny_model_dir, user_files, cli_out)]) == 0
    final = train(config, _overrides(tiny_model_dir, user_files, api_out))
    assert final == api_out / "final" and (final / "config.json").is_file()
    cli_rows, api_rows = _rows(cli_out), _rows(api_out)
    assert [r["step"] for r in api_rows] == [1, 2] and api_rows == cli_rows

    assert main(["eval", str(config), *_overrides(tiny_model_dir, user_files, cli_out)]) == 0
    result = evaluate(load_config(config, _overrides(tiny_model_dir, user_files, api_out)))
    written = json.loads((api_out / "eval.json").read_text())
    assert {k: v for k, v in result.items() if k != "path"} == written
    cli_result = json.loads((cli_out / "eval.json").read_text())
    for key in ("num_prompts", "mean_response_tokens", "eos_rate", "kl", "samples"):
        assert written[key] == cli_result[key], key
