"""Which GPU a rank's colocated vLLM engine runs on.

vLLM 0.32's in-process executor (`UniProcExecutor`) takes its device index from the engine's device config, which
vLLM builds from the platform alone (`cuda`, no index): every rank of a launched job would put its engine on GPU 0,
next to rank 0's trainer. vLLM accepts an Executor subclass as `distributed_executor_backend`; the one here is the
same executor with the device index taken from `LOCAL_RANK`, as the deepspeed and torchrun launchers set it.

Used on CUDA for ranks other than local rank 0 (`rank_engine_args`); on CPU, and on GPU 0, vLLM's own executor runs
unchanged. Tested on CPU (the executor starts a real engine, and its device index follows LOCAL_RANK); not run on a
multi-GPU node.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


@functools.cache
def local_rank_executor() -> type:
    """`UniProcExecutor` whose worker uses device `cuda:LOCAL_RANK` (one class per process; vLLM imported lazily)."""
    from vllm.v1.executor.uniproc_executor import UniProcExecutor

    class LocalRankUniProcExecutor(UniProcExecutor):
        """vLLM's in-process executor on this rank's own device (see the module docstring)."""

        def _distributed_args(self) -> tuple[str, int, int]:
            init_method, rank, _ = super()._distributed_args()
            return init_method, rank, local_rank()

    return LocalRankUniProcExecutor


def rank_engine_args(cuda: bool | None = None) -> dict[str, Any]:
    """vLLM engine arguments that place this rank's engine on its own GPU; {} where vLLM's default is right."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if not cuda or local_rank() == 0:
        return {}
    return {"distributed_executor_backend": local_rank_executor()}
