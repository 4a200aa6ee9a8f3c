"""Name the machine a benchmark ran on (stored in every results JSON)."""

from __future__ import annotations

import os
import platform

import torch


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "gpu": gpu,
        "torch": torch.__version__,
        "device": gpu or f"CPU ({cpu}, {os.cpu_count()} cores)",
    }
