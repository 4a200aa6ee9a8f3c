"""make_engine: registry lookup, the missing-vLLM one-line error, and the opt-in HF fallback.

.venv/bin/python -m pytest tests/unit/test_rollout_factory.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from transformers import AutoModelForCausalLM

from una_hpc.config import Config
from una_hpc.rollout import (
    VLLM_HINT,
    HFEngine,
    RolloutEngine,
    VLLMNotInstalledError,
    make_engine,
    module_available,
    require_vllm,
)
from una_hpc.rollout.factory import special_token_ids

MISSING = "una_hpc_test_no_such_module"


def test_find_spec_check():
    assert module_available("torch") and not module_available(MISSING)
    assert not module_available(MISSING + ".sub")  # missing parent package: no exception, just False
    with pytest.raises(VLLMNotInstalledError) as e:
        require_vllm(MISSING)
    assert str(e.value) == VLLM_HINT and "\n" not in VLLM_HINT and "rollout.engine=hf" in VLLM_HINT


def test_hf_engine_from_config(tiny_model_dir):
    cfg = Config()
    cfg.rollout.engine = "hf"
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    engine = make_engine(cfg, model, tiny_model_dir)
    assert isinstance(engine, HFEngine) and isinstance(engine, RolloutEngine)
    assert engine.model is model and engine.max_length == cfg.trainer.max_length
    assert special_token_ids(model, tiny_model_dir) == ([model.config.eos_token_id], model.config.pad_token_id)


def test_unknown_engine_name(tiny_model_dir):
    cfg = Config()
    cfg.rollout.engine = "sglang"  # bypasses the config's Literal check on purpose
    with pytest.raises(ValueError, match="rollout.engine 'sglang' is not one of vllm, hf"):
        make_engine(cfg, None, tiny_model_dir)


# A real process in which `import vllm` fails (sys.modules[name] = None is Python's import blocker).
_NO_VLLM = textwrap.dedent("""
    import json, sys
    sys.modules["vllm"] = None
    from transformers import AutoModelForCausalLM
    from una_hpc.config import Config
    from una_hpc.rollout import make_engine
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
    cfg = Config()
    result = {}
    try:
        make_engine(cfg, model, sys.argv[1])
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}"
    cfg.rollout.allow_hf_fallback = True
    result["fallback"] = type(make_engine(cfg, model, sys.argv[1])).__name__
    print(json.dumps(result))
""")


def test_missing_vllm_is_one_line_unless_fallback_allowed(tiny_model_dir):
    proc = subprocess.run(
        [sys.executable, "-c", _NO_VLLM, str(tiny_model_dir)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["error"] == f"VLLMNotInstalledError: {VLLM_HINT}"
    assert result["fallback"] == "HFEngine"
