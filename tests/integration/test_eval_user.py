"""`una-hpc eval` and `eval.every` on a user-shaped setup: the user's model dir, prompts file and reward model.

    .venv/bin/python -m pytest tests/integration/test_eval_user.py -q

No embedded task anywhere: the prompts are plain English (no gold reward applies), the reward model has its own
tokenizer, and task.dir points at a folder that must never be created.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from text_corpus import WORDS, corpus, scored_rows, write_jsonl
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForSequenceClassification

from una_hpc.cli import main
from una_hpc.config import load_config
from una_hpc.models.tiny import tiny_llama_config, train_tokenizer
from una_hpc.rollout.reward import RewardModel
from una_hpc.trainer import run_training
from una_hpc.trainer.eval_live import LiveEval

pytestmark = pytest.mark.slow
PROMPTS = [
    "tell me about the cat on the mat",
    "is the red dog blue or green",
    "please answer one question",
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "count the blue cats"}],
    "say yes or no to the dog",
    "list the green and red ones",
]


@pytest.fixture(scope="module")
def user(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("user")
    prompts = root / "heldout.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    rm = root / "rm"  # a reward model with its own tokenizer: eval scores texts
    cfg = tiny_llama_config(train_tokenizer(corpus(300, seed=7), rm, vocab_size=280), hidden_size=64, layers=1, heads=1)
    cfg.num_labels = 1
    torch.manual_seed(5)
    LlamaForSequenceClassification(cfg).save_pretrained(str(rm))
    scores = write_jsonl(root / "score.jsonl", scored_rows(16, 2, seed=0, words=WORDS))
    config = root / "user.yaml"
    config.write_text(
        f"model:\n  path: {tiny_model_dir}\ndata:\n  eval_path: {prompts}\ntask:\n  dir: {root / 'no_task'}\n"
    )
    return {"model": tiny_model_dir, "prompts": prompts, "rm": rm, "scores": scores, "config": config, "root": root}


def test_eval_cli_on_a_user_model(user, tmp_path, capsys):
    out = tmp_path / "run"
    aligned = AutoModelForCausalLM.from_pretrained(str(user["model"]))  # stands in for a trained final/
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in aligned.parameters():
            p.add_(0.2 * p.abs().mean() * torch.randn(p.shape, generator=g))
    aligned.save_pretrained(str(out / "final"))
    AutoTokenizer.from_pretrained(str(user["model"])).save_pretrained(str(out / "final"))

    args = ["eval", str(user["config"]), f"trainer.output_dir={out}", "eval.max_new_tokens=10", "eval.temperature=1"]
    assert main(args + [f"eval.reward_model={user['rm']}"]) == 0
    printed = capsys.readouterr().out
    table = [ln for ln in printed.splitlines() if ln.startswith(("base ", "aligned "))]
    assert len(table) == 2 and "RM score" in printed and "ties count half" in printed, printed
    result = json.loads((out / "eval.json").read_text())
    base = json.loads((out / "base_eval" / "eval.json").read_text())
    assert result["reward_source"] == "reward_model" and result["num_prompts"] == len(PROMPTS)
    rm = RewardModel.from_pretrained(user["rm"])
    for r in (result, base):
        scores = rm.score_texts([s["prompt"] for s in r["samples"]], [s["response"] for s in r["samples"]])
        assert r["reward"]["mean"] == pytest.approx(scores.mean().item(), abs=1e-5)
    w = result["win_rate"]
    assert w["baseline"] == str(user["model"]) and w["rate"] == pytest.approx((w["wins"] + 0.5 * w["ties"]) / 6)
    assert result["kl"]["mean"] > 0 and (out / "eval.png").stat().st_size > 1000
    assert not (user["root"] / "no_task").exists()  # the embedded task was never built

    # no reward model: one line, KL and lengths only, exit 0
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert sum("KL and lengths only" in ln for ln in printed.splitlines()) == 1
    result = json.loads((out / "eval.json").read_text())
    assert result["reward_source"] is None and "reward" not in result and result["kl"]["mean"] > 0


def _train(user, out: Path, **extra) -> list[dict]:
    overrides = {
        "data.path": user["scores"],
        "data.format": "score",
        "trainer.output_dir": out,
        "data.cache_dir": out.parent / "cache",
        "trainer.batch_size": 8,
        "trainer.max_steps": 4,
        "trainer.progress": "false",
        "trainer.tensorboard": "false",
        "optim.lr": 1e-3,
        "loss.beta": 0.5,
        "eval.reward_model": user["rm"],
        "eval.num_prompts_during_training": 4,
        "eval.max_new_tokens": 8,
        **extra,
    }
    run_training(load_config(user["config"], [f"{k}={v}" for k, v in overrides.items()]))
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_eval_every_logs_eval_keys_and_leaves_training_alone(user, tmp_path, lora_rank, monkeypatch):
    # These runs draw no random numbers while training, so equal losses alone would not catch a leaked RNG draw:
    # the spy checks torch's and Python's RNG states and the policy's mode around every evaluation.
    calls = []
    metrics = LiveEval.metrics

    def spy(self):
        before = torch.get_rng_state(), random.getstate(), self.run.engine.module.training
        row = metrics(self)
        after = torch.get_rng_state(), random.getstate(), self.run.engine.module.training
        calls.append(torch.equal(before[0], after[0]) and before[1:] == after[1:])
        return row

    monkeypatch.setattr(LiveEval, "metrics", spy)
    # full fine-tuning with cached reference logps holds no reference: eval loads one; LoRA turns its adapter off
    plain = _train(user, tmp_path / "plain", **{"model.lora_rank": lora_rank})
    evald = _train(user, tmp_path / "eval", **{"model.lora_rank": lora_rank, "eval.every": 2})
    assert calls == [True, True]
    assert [r["loss"] for r in evald] == [r["loss"] for r in plain]  # bitwise: no RNG or mode side effects
    keys = {
        "eval_reward",
        "eval_reward_ci_low",
        "eval_reward_ci_high",
        "eval_kl",
        "eval_win_rate",
        "eval_response_tokens",
    }
    assert [r["step"] for r in evald if keys <= r.keys()] == [2, 4]
    assert not any(k.startswith("eval_") for r in plain + evald[::2] for k in r)
    for r in evald[1::2]:
        assert r["eval_reward_ci_low"] <= r["eval_reward"] <= r["eval_reward_ci_high"]
        # KL >= 0 in expectation; the sampled estimate may dip below 0, but not by 3 standard errors.
        assert 0 <= r["eval_win_rate"] <= 1 and r["eval_kl"] > -3 * r["eval_kl_stderr"]
    a, b = (load_file(str(tmp_path / d / "final" / "model.safetensors")) for d in ("plain", "eval"))
    assert all(torch.equal(a[k], b[k]) for k in a)
