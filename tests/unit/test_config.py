"""Typed config: YAML + overrides, type conversion, one-line errors.

.venv/bin/python -m pytest tests/unit/test_config.py -q
"""

import dataclasses
import importlib.util
import re
import typing
import warnings
from pathlib import Path

import pytest

from una_hpc.config import (
    LOSS_FEEDBACK,
    LOSS_KEYS,
    LOSS_LOOPS,
    Config,
    ConfigError,
    ConfigWarning,
    LossConfig,
    LossName,
    config_errors,
    config_fields,
    config_warnings,
    describe,
    field_docs,
    load_config,
    save_config,
)


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("loss:\n  name: dpo\n  beta: 0.1\ntrainer:\n  max_steps: 7\n")
    cfg = load_config(
        p,
        [
            "trainer.max_steps=9",
            "optim.lr=3e-5",
            "model.lora_rank=32",
            "trainer.resume=true",
            "data.attribute_weights.verbosity=0.2",
            "model.lora_target_modules=q_proj,v_proj",
        ],
    )
    assert (cfg.loss.name, cfg.loss.beta, cfg.trainer.max_steps) == ("dpo", 0.1, 9)
    assert cfg.optim.lr == 3e-5 and isinstance(cfg.optim.lr, float)
    assert cfg.model.lora_rank == 32 and cfg.trainer.resume is True
    assert cfg.data.attribute_weights["verbosity"] == 0.2 and cfg.data.attribute_weights["helpfulness"] == 0.65
    assert cfg.model.lora_target_modules == ["q_proj", "v_proj"]
    save_config(cfg, tmp_path / "out.yaml")
    assert load_config(tmp_path / "out.yaml") == cfg


@pytest.mark.parametrize(
    "override,message",
    [
        ("trainer.bach_size=4", "unknown config key trainer.bach_size; valid: batch_size"),
        ("trainr.batch_size=4", "unknown config section 'trainr'"),
        ("trainer.max_steps=abc", "config key trainer.max_steps: expected an integer, got 'abc'"),
        ("loss.name=ppo2", "config key loss.name: 'ppo2' is not one of dpo, kto, una_binary"),
        ("trainer.dtype=fp16", "config key trainer.dtype: 'fp16' is not one of float32, bfloat16"),
        ("loss.beta=[1]", "config key loss.beta: expected a number"),
        ("trainer.max_steps", "is not key.sub=value"),
    ],
)
def test_errors_are_one_line_and_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)


# --- Checked when the config loads: every range and cross-field rule, all problems at once -----------------------

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["parallel.zero_stage=4"], "config key parallel.zero_stage: must be 0, 1, 2 or 3, got 4"),
        (["rollout.top_p=0"], "config key rollout.top_p: must be in (0, 1], got 0.0"),
        (["rollout.top_p=1.5"], "config key rollout.top_p: must be in (0, 1]"),
        (["rollout.temperature=-0.1"], "config key rollout.temperature: must be >= 0"),
        (["rollout.gpu_memory_utilization=1.2"], "config key rollout.gpu_memory_utilization: must be in (0, 1]"),
        (["optim.lr=0"], "config key optim.lr: must be > 0, got 0.0"),
        (["optim.lr=nan"], "config key optim.lr: expected a finite number, got nan"),
        (["loss.beta=-1"], "config key loss.beta: must be > 0"),
        (["trainer.batch_size=0"], "config key trainer.batch_size: must be >= 1"),
        (["trainer.micro_batch_size=-1"], "config key trainer.micro_batch_size: must be >= 0"),
        (["trainer.log_every=0"], "config key trainer.log_every: must be >= 1"),
        (["trainer.keep_checkpoints=-1"], "config key trainer.keep_checkpoints: must be >= 0"),
        (["parallel.tp_size=0"], "config key parallel.tp_size: must be >= 1"),
        (["data.binary_threshold=1.1"], "config key data.binary_threshold: must be in [0, 1]"),
        (["eval.every=-2"], "config key eval.every: must be >= 0"),
        (["ppo.gamma=1.5", "loss.name=ppo"], "config key ppo.gamma: must be in [0, 1]"),
        (["data.attribute_weights.helpfulness=-1"], "config key data.attribute_weights: weights must be non-negative"),
        (["data.attribute_weights={a: 0, b: 0}"], "weights must be non-negative with a positive sum"),
        (["loss.type_weights.pairwse=1", "loss.name=mixed"], "config key loss.type_weights: unknown entry pairwse"),
        (
            ["trainer.resume=true", "trainer.overwrite=true"],
            "trainer.resume=true and trainer.overwrite=true contradict",
        ),
        (["parallel.offload_optimizer=true"], "parallel.offload_optimizer=true needs parallel.zero_stage >= 1"),
        (["parallel.offload_param=true", "parallel.zero_stage=2"], "parallel.offload_param=true needs parallel.zero_"),
        (["model.lora_rank=8", "model.ref_path=/models/ref"], "model.ref_path=/models/ref is for full fine-tuning"),
        (["loss.name=una_score", "data.view=pairwise"], "data.view=pairwise gives pairwise examples, which loss.name="),
        (["loss.name=dpo", "data.view=mixed"], "data.view=mixed mixes pairwise, binary and score examples"),
        (
            ["loss.name=una_online", "trainer.max_length=48", "rollout.max_new_tokens=48"],
            "trainer.max_length=48 leaves no room for a prompt",
        ),
        (["loss.name=ppo", "parallel.tp_size=2"], "tensor parallelism is not wired for them"),
        (["loss.name=una_online", "rollout.sleep_level=3"], "rollout.sleep_level: must be 0 (off), 1 or 2"),
        (["loss.name=ppo", "parallel.zero_stage=3", "rollout.engine=hf"], "rollout.engine=hf cannot sample from"),
        (["eval.every=3", "trainer.log_every=2"], "eval.every=3 must be a multiple of trainer.log_every=2"),
        (["eval.every=2", "parallel.tp_size=2"], "eval.every evaluates on rank 0 alone"),
        (["eval.every=2", "data.path=x.jsonl"], "eval.every needs held-out prompts: set data.eval_path"),
    ],
)
def test_range_and_cross_field_rules_fail_at_load(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert any(message in p for p in e.value.problems), e.value.problems
    assert all("\n" not in p for p in e.value.problems)


def test_every_problem_is_reported_at_once_one_line_each(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(
            None,
            [
                "parallel.zero_stage=7",
                "rollout.top_p=2",
                "optim.lr=-1",
                "trainer.resume=true",
                "trainer.overwrite=true",
            ],
        )
    assert len(e.value.problems) == 4 and str(e.value).splitlines() == e.value.problems
    # keys and values that do not parse are collected too, from the YAML and the overrides together
    p = tmp_path / "c.yaml"
    p.write_text("trainer:\n  bach_size: 4\n  max_steps: abc\nloss:\n  name: dpo2\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, ["optim.lr=x", "nokey"])
    assert [m.split(":")[0] for m in e.value.problems] == [
        "unknown config key trainer.bach_size; valid",
        "config key trainer.max_steps",
        "config key loss.name",
        "config key optim.lr",
        "override 'nokey' is not key.sub=value",
    ]


def test_shipped_configs_and_defaults_load_without_errors():
    assert config_errors(Config()) == [] and config_warnings(Config()) == []
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        load_config(path)  # raises on any error


def _warnings_of(overrides):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_config(None, overrides)
    return [str(w.message) for w in caught if issubclass(w.category, ConfigWarning)]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["loss.name=dpo", "ppo.epochs=4"], "ppo.epochs=4 is ignored by loss.name=dpo"),
        (["loss.name=dpo", "rollout.temperature=0.7"], "rollout.temperature=0.7 is ignored by loss.name=dpo"),
        (["loss.name=dpo", "loss.binary_kind=bce"], "loss.binary_kind=bce is ignored by loss.name=dpo"),
        (["loss.name=una_score", "loss.type_weights.score=2"], "loss.type_weights={"),
        (["loss.name=ppo", "loss.beta=0.5"], "loss.beta=0.5 is ignored by loss.name=ppo"),
        (["loss.name=una_online", "eval.every=2"], "eval.every=2 is ignored by loss.name=una_online"),
        (["loss.name=una_online", "data.view=score"], "data.view=score is ignored by loss.name=una_online"),
        (["loss.name=una_online", "trainer.batch_size=16"], "trainer.batch_size=16 is ignored by loss.name=una_online"),
        (["model.lora_alpha=32"], "model.lora_alpha=32 is ignored with model.lora_rank=0"),
        (
            ["parallel.backend=none", "parallel.zero_stage=2"],
            "parallel.zero_stage=2 is ignored by parallel.backend=none",
        ),
        (["data.packing=false"], "data.packing=false is ignored"),
        (["data.format=pairwise"], "data.format=pairwise is ignored: data.path is empty"),
    ],
)
def test_keys_without_effect_warn_one_line_each(overrides, message):
    lines = _warnings_of(overrides)
    assert len(lines) == 1 and message in lines[0] and "\n" not in lines[0], lines


def test_no_warning_for_keys_the_loss_reads_or_left_at_defaults():
    assert _warnings_of(["loss.name=ppo", "ppo.epochs=4", "rollout.temperature=0.7"]) == []
    assert _warnings_of(["loss.name=mixed", "loss.binary_kind=bce", "loss.type_weights.score=2"]) == []
    assert _warnings_of(["loss.name=una_online", "trainer.batch_size=32"]) == []  # = 8 prompts x 4 samples
    assert _warnings_of(["loss.name=dpo", "rollout.reward_model=/rm"]) == []  # train-rm writes it
    # a short try of a long run's YAML: micro-batch above the batch acts as 0, a warmup longer than the run is fine
    assert (
        _warnings_of(
            ["trainer.batch_size=4", "trainer.micro_batch_size=8", "optim.warmup_steps=10", "trainer.max_steps=2"]
        )
        == []
    )


def test_loss_tables_match_the_registry():
    from una_hpc.losses import LOSSES

    assert set(LOSSES) == set(typing.get_args(LossName)) == set(LOSS_LOOPS) == set(LOSS_FEEDBACK)
    for name, head in LOSSES.items():
        assert (head.loop, tuple(head.feedback_types)) == (LOSS_LOOPS[name], LOSS_FEEDBACK[name]), name
    assert set(LOSS_KEYS) == {f.name for f in dataclasses.fields(LossConfig)} - {"name"}


def test_tensorboard_is_off_by_default_and_must_be_installed_when_on(monkeypatch):
    assert Config().trainer.tensorboard is False
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "tensorboard" else real(n, *a))
    with pytest.raises(ConfigError) as e:
        load_config(None, ["trainer.tensorboard=true"])
    assert e.value.problems == [
        "trainer.tensorboard=true but tensorboard is not installed: pip install tensorboard "
        "(or trainer.tensorboard=false)"
    ]


# --- `una-hpc config`: every key with its type, value, default and doc -------------------------------------------


def test_every_field_is_documented_and_described(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("loss:\n  name: dpo\n  beta: 0.25\ntrainer:\n  max_steps: 7\n")
    cfg = load_config(p)
    keys = [
        f"{s.name}.{f.name}" for s in dataclasses.fields(Config) for f in dataclasses.fields(getattr(Config(), s.name))
    ]
    docs = field_docs()
    assert set(docs) == set(keys) and all(docs[k] for k in keys), [k for k in keys if not docs.get(k)]
    infos = {i.key: i for i in config_fields(cfg)}
    assert list(infos) == keys
    assert (infos["loss.beta"].type, infos["loss.beta"].value, infos["loss.beta"].default) == ("float", 0.25, 0.03)
    assert infos["trainer.dtype"].type == "float32|bfloat16"
    text = describe(cfg)
    for k in keys:
        assert f"  {k} (" in text
    assert "  loss.beta (float) = 0.25  [default: 0.03]" in text
    assert "  trainer.max_steps (int) = 7  [default: 100]" in text
    assert "[trainer]" in text and "0 = the rank's whole share" in text


def test_config_command_prints_every_key_and_the_configs_problems(tmp_path, capsys):
    from una_hpc.cli import main

    p = tmp_path / "c.yaml"
    p.write_text("loss:\n  name: dpo\n  beta: 0.25\n")
    assert main(["config", str(p), "trainer.max_steps=7", "ppo.epochs=3"]) == 0
    out, err = capsys.readouterr()
    assert "  loss.beta (float) = 0.25  [default: 0.03]" in out and "trainer.max_steps (int) = 7" in out
    assert [ln.split()[0] for ln in out.splitlines() if re.match(r"  [a-z]+\.[a-z_0-9]+ \(", ln)] == list(field_docs())
    assert err.splitlines() == ["warning: ppo.epochs=3 is ignored by loss.name=dpo (only loss.name=ppo reads ppo.*)"]
    assert main(["config", "rollout.top_p=0", "optim.lr=0"]) == 1  # no file: the overrides alone
    out, err = capsys.readouterr()
    assert "rollout.top_p (float) = 0.0" in out
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [
        "error: config key optim.lr: must be > 0, got 0.0",
        "error: config key rollout.top_p: must be in (0, 1], got 0.0",
    ]


def test_micro_batch_size_means_one_rank_everywhere():
    doc = field_docs()["trainer.micro_batch_size"]
    assert "ON ONE data-parallel rank".lower() in doc.lower() and "0 = the rank's whole share" in doc
