"""configs/parallel/*.yaml are the quickstart plus a parallel section; the paper recipe has the paper's numbers.

.venv/bin/python -m pytest tests/distributed/test_parallel_configs.py -q      (about 2 s)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from una_hpc.config import load_config, to_dict
from una_hpc.parallel import build_ds_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name,stage,tp", [("zero2", 2, 1), ("zero3", 3, 1), ("tp2", 0, 2)])
def test_variants_differ_from_quickstart_only_in_parallel(name, stage, tp):
    base = to_dict(load_config(CONFIGS / "quickstart.yaml"))
    cfg = load_config(CONFIGS / "parallel" / f"{name}.yaml")
    variant = to_dict(cfg)
    assert variant["trainer"].pop("output_dir") != base["trainer"].pop("output_dir")
    assert variant.pop("parallel") != base.pop("parallel")
    assert variant == base
    assert (cfg.parallel.backend, cfg.parallel.zero_stage, cfg.parallel.tp_size) == ("auto", stage, tp)
    ds = build_ds_config(cfg)
    assert ds["zero_optimization"]["stage"] == stage
    assert ds.get("tensor_parallel", {"autotp_size": 1})["autotp_size"] == tp


def test_paper_recipe_mistral7b_zero3():
    cfg = load_config(CONFIGS / "paper" / "mistral7b_offline_zero3.yaml")
    assert (cfg.loss.name, cfg.loss.beta, cfg.optim.lr, cfg.model.lora_rank) == ("una_score", 0.03, 3e-5, 32)
    assert (cfg.parallel.backend, cfg.parallel.zero_stage, cfg.trainer.dtype) == ("deepspeed", 3, "bfloat16")
    assert "Mistral-7B" in cfg.model.path
    ds = build_ds_config(cfg)
    assert ds["bf16"] == {"enabled": True} and ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]
