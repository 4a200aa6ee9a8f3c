"""The colocated engine's console and memory rules, without starting vLLM: log routing, the start-up memory check,
sleep mode on CPU.

    .venv/bin/python -m pytest tests/unit/test_rollout_console.py -q

The real engine's log file and the per-sync probe are tested in tests/integration/test_vllm_sync.py and
tests/distributed/test_online_dp.py.
"""

from __future__ import annotations

import logging

import pytest

from una_hpc.rollout.base import EngineStartError
from una_hpc.rollout.vllm_host import check_engine_memory, resolve_sleep_level, route_vllm_logs

GIB = 2**30


@pytest.fixture
def vllm_logger():
    log = logging.getLogger("vllm")
    saved = (list(log.handlers), log.level, log.propagate)
    yield log
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    log.handlers[:], log.level, log.propagate = saved[0], saved[1], saved[2]


def test_vllm_logs_go_to_the_file_and_only_warnings_that_matter_to_the_console(vllm_logger, tmp_path, capsys):
    route_vllm_logs(tmp_path / "vllm.log", "INFO")
    route_vllm_logs(tmp_path / "vllm.log", "INFO")  # a second engine in the process: no duplicate handlers
    child = logging.getLogger("vllm.model_executor.reload")
    child.info("Reloading weights inplace...")
    child.warning("RotaryEmbedding: Failed to load weights")
    child.warning("KV cache is almost full")
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["vllm WARNING: KV cache is almost full"]
    text = (tmp_path / "vllm.log").read_text()
    assert text.count("Reloading weights inplace") == 1 and "Failed to load weights" in text


def test_engine_memory_fraction_is_checked_in_one_line():
    check_engine_memory(0.3, free_total=(40 * GIB, 80 * GIB))  # 24 GiB of 40 free: fits
    with pytest.raises(EngineStartError) as e:
        check_engine_memory(0.6, free_total=(40 * GIB, 80 * GIB))
    msg = str(e.value)
    assert "\n" not in msg and "asks vLLM for 48.0 GiB but only 40.0 of 80.0 GiB are free" in msg
    assert "at most 0.50" in msg


def test_sleep_mode_is_a_logged_no_op_on_cpu(caplog):
    with caplog.at_level(logging.WARNING):
        assert resolve_sleep_level(1, cuda=False) == 0
    assert "sleep mode needs CUDA; on CPU it is a no-op" in caplog.text
    assert resolve_sleep_level(2, cuda=True) == 2 and resolve_sleep_level(0, cuda=False) == 0
