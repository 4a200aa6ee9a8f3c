"""Helpers for the distributed tests: launching `deepspeed` on CPU and picking free ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
REPO = HERE.parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_config(config: Path, args: list[str], nprocs: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    """`NPROC=n launch/cpu.sh CONFIG args`: the real trainer (una_hpc.train) on n gloo processes."""
    env = {**os.environ, "NPROC": str(nprocs), "MASTER_PORT": str(free_port()), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        ["bash", str(REPO / "launch" / "cpu.sh"), str(config), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def deepspeed_launch(script: Path, args: list[str], nprocs: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    """launch/cpu.sh with UNA_ENTRY=script: `deepspeed --num_gpus N --no_local_rank script args` on CPU (gloo)."""
    env = {
        **os.environ,
        "UNA_ENTRY": str(script),
        "NPROC": str(nprocs),
        "MASTER_PORT": str(free_port()),
        "UNA_DEEPSPEED": str(Path(sys.executable).parent / "deepspeed"),
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.run(
        ["bash", str(REPO / "launch" / "cpu.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
