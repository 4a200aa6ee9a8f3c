"""Host-memory settings of a training process, applied once by the command-line entry point (never on import).

glibc's malloc adjusts two thresholds as a program runs: each time a large mmap'd block is freed it raises the mmap
threshold (up to 32 MiB on 64-bit) and sets the trim threshold to twice that. After the first step, the activation
and gradient blocks of a CPU step (a few MiB each) come from the heap and up to 64 MiB of free heap top is kept: RSS
ratchets up to the sum of every block the step ever held, not the step's live peak. Both are fixed here instead:
- mmap threshold 32 MiB: activations reuse heap memory. Fixing it at 64 KiB instead (an earlier choice) kept RSS
  at the live tensors but made every block a fresh mmap whose pages fault in zeroed: a DPO step on SmolLM2-135M
  (LoRA r=8, 8 pairs, no checkpointing) took 5.7 s instead of 3.8 s and the reference pass 20.0 s instead of 14.8 s
  (2 cores; measured with MALLOC_MMAP_THRESHOLD_ at 64 KiB and 32 MiB, benchmarks/offline_vs_trl.py's settings).
- trim threshold 128 KiB (glibc's initial value): freed memory at the heap's top goes back to the OS at once.

Measured (the same run, micro-batches of 2 pairs, 10 steps): see benchmarks/results/offline_vs_trl_cpu.json for
the peak RSS this gives against TRL. A user's own MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ wins; other C
libraries (musl, macOS) are left alone; CUDA tensors use torch's caching allocator and are not affected.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 128 * 1024


def fix_malloc_thresholds(mmap: int = MMAP_THRESHOLD_BYTES, trim: int = TRIM_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap and trim thresholds (see the module docstring). Returns whether they were set."""
    if {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ) or platform.libc_ver()[0] != "glibc":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    return bool(libc.mallopt(M_MMAP_THRESHOLD, mmap)) and bool(libc.mallopt(M_TRIM_THRESHOLD, trim))
