"""Typed config: YAML + overrides, type conversion, one-line errors.

    .venv/bin/python -m pytest tests/unit/test_config.py -q
"""
import pytest

from una_hpc.config import ConfigError, load_config, save_config


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("loss:\n  name: dpo\n  beta: 0.1\ntrainer:\n  max_steps: 7\n")
    cfg = load_config(p, ["trainer.max_steps=9", "optim.lr=3e-5", "model.lora_rank=32", "trainer.resume=true",
                          "data.attribute_weights.verbosity=0.2", "model.lora_target_modules=q_proj,v_proj"])
    assert (cfg.loss.name, cfg.loss.beta, cfg.trainer.max_steps) == ("dpo", 0.1, 9)
    assert cfg.optim.lr == 3e-5 and isinstance(cfg.optim.lr, float)
    assert cfg.model.lora_rank == 32 and cfg.trainer.resume is True
    assert cfg.data.attribute_weights["verbosity"] == 0.2 and cfg.data.attribute_weights["helpfulness"] == 0.65
    assert cfg.model.lora_target_modules == ["q_proj", "v_proj"]
    save_config(cfg, tmp_path / "out.yaml")
    assert load_config(tmp_path / "out.yaml") == cfg


@pytest.mark.parametrize("override,message", [
    ("trainer.bach_size=4", "unknown config key trainer.bach_size; valid: batch_size"),
    ("trainr.batch_size=4", "unknown config section 'trainr'"),
    ("trainer.max_steps=abc", "config key trainer.max_steps: expected an integer, got 'abc'"),
    ("loss.name=ppo2", "config key loss.name: 'ppo2' is not one of dpo, kto, una_binary"),
    ("trainer.dtype=fp16", "config key trainer.dtype: 'fp16' is not one of float32, bfloat16"),
    ("loss.beta=[1]", "config key loss.beta: expected a number"),
    ("trainer.max_steps", "is not key.sub=value"),
])
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
