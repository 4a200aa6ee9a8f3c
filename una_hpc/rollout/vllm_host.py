"""What a colocated vLLM engine needs from its host process: a readable console, the trainer's process group left
alone, and its memory checked and released around training.

    route_vllm_logs(out / "vllm.log", "INFO")            # vLLM -> file; console: warnings that matter
    with keep_default_process_group(): llm shutdown      # vLLM's teardown would destroy the trainer's group
    check_engine_memory(0.3)                             # CUDA: one line when the fraction does not fit
    resolve_sleep_level(1, torch.cuda.is_available())    # sleep mode on CUDA; a logged no-op on CPU

Tested by: .venv/bin/python -m pytest tests/unit/test_rollout_console.py tests/distributed/test_online_dp.py -q
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from .base import EngineStartError

log = logging.getLogger(__name__)

CONSOLE_NOISE = (
    "Failed to load weights",  # each reload: layers without weights (rotary embedding); harmless
    "The global random seed is set",
    "Enforce eager set",
    "Inductor compilation was disabled",
    "is not found in LD_PRELOAD",
    "Triton is not installed",
    "Model Runner V2 requires Triton",
    "Reset SSM cache type",
    "doesn't allow to use `torch.set_num_threads`",  # the trainer's thread count is set before the engine
    "Triton is installed, but doesn't include CPU backend",
)
"""Warnings vLLM prints on every start or sync that say nothing about this run: file only, not the console."""


@contextlib.contextmanager
def quiet_vllm(routed: bool) -> Iterator[None]:
    """Around `import vllm` and the engine's construction: logs go where route_vllm_logs sent them (vLLM would
    install its console handler) and torch's deprecation warnings that vLLM's kernel registry triggers are
    dropped."""
    if not routed:
        yield
        return
    set_here = "VLLM_CONFIGURE_LOGGING" not in os.environ  # a value the user set is respected
    if set_here:
        os.environ["VLLM_CONFIGURE_LOGGING"] = "0"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.distributed\.reduce_op.*", category=FutureWarning)
            yield
    finally:
        if set_here:
            os.environ.pop("VLLM_CONFIGURE_LOGGING", None)


class _NotNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(n in message for n in CONSOLE_NOISE)


def route_vllm_logs(log_file: str | Path | None, level: str = "INFO") -> None:
    """vLLM's logger -> `log_file` at `level`, console -> warnings and errors minus CONSOLE_NOISE. None: leave
    vLLM's own handlers (its default console output)."""
    if log_file is None:
        return
    vllm_log = logging.getLogger("vllm")
    for h in list(vllm_log.handlers):
        if getattr(h, "_una_route", False) or isinstance(h, logging.StreamHandler):
            vllm_log.removeHandler(h)
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(log_file)
    to_file.setLevel(level.upper())
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    console = logging.StreamHandler()
    console.setLevel(logging.WARNING)
    console.addFilter(_NotNoise())
    console.setFormatter(logging.Formatter("vllm %(levelname)s: %(message)s"))
    for h in (to_file, console):
        h._una_route = True  # type: ignore[attr-defined]
        vllm_log.addHandler(h)
    vllm_log.setLevel(min(to_file.level, logging.WARNING))
    vllm_log.propagate = False


@contextlib.contextmanager
def keep_default_process_group() -> Iterator[None]:
    """vLLM's shutdown destroys torch.distributed's default group, which a colocated engine shares with the
    trainer (it started it): keep that group; vLLM's own sub-groups are destroyed as usual."""
    import torch.distributed as dist

    if not dist.is_initialized():
        yield
        return
    original = dist.destroy_process_group

    def destroy_subgroups_only(group=None):
        if group is not None and group is not dist.group.WORLD:
            original(group)

    dist.destroy_process_group = destroy_subgroups_only
    try:
        yield
    finally:
        dist.destroy_process_group = original


def resolve_sleep_level(level: int, cuda: bool) -> int:
    """rollout.sleep_level as the engine uses it: vLLM's sleep mode exists on CUDA only; elsewhere 0, said once in
    the log (the engine then keeps its memory while the trainer runs)."""
    if level and not cuda:
        log.warning(
            "rollout.sleep_level=%d: vLLM sleep mode needs CUDA; on CPU it is a no-op (the engine keeps "
            "its memory during training)",
            level,
        )
        return 0
    return level


def check_engine_memory(fraction: float, free_total: tuple[int, int] | None = None) -> None:
    """Colocated on a GPU, vLLM takes `fraction` of the device's memory at start-up, next to what the trainer
    already holds: a one-line EngineStartError when that does not fit (instead of vLLM's multi-line one). No-op
    on CPU. `free_total` (bytes free, bytes total) defaults to torch.cuda.mem_get_info()."""
    if free_total is None:
        if not torch.cuda.is_available():
            return
        free_total = torch.cuda.mem_get_info()
    free, total = free_total
    asked = fraction * total
    if asked > free:
        gib = 2**30
        raise EngineStartError(
            f"rollout.gpu_memory_utilization={fraction:g} asks vLLM for {asked / gib:.1f} GiB but only "
            f"{free / gib:.1f} of {total / gib:.1f} GiB are free after the trainer's models: set it to at most "
            f"{free / total:.2f}, or shrink the trainer (ZeRO-3, LoRA, offload)"
        )
