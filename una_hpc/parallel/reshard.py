"""Resume a ZeRO-1/2/3 checkpoint on another number of ranks, through DeepSpeed's universal checkpoint.

    src = universal_checkpoint(ckpt_engine_dir, tag, is_main, barrier)   # converted once, by rank 0, kept beside
    DeepSpeedEngine: load_checkpoint(src) with load_universal_checkpoint on (any data-parallel size)
    LocalEngine:     load_universal_into(model, optimizer, src)          # fp32 weights + Adam moments + step

The universal layout holds one folder per parameter (`zero/NAME/{fp32,exp_avg,exp_avg_sq,step}.pt`, full
unpartitioned tensors), so any rank count can cut its own partitions from it. DeepSpeed's converter reads the
original files with weights_only=False (docs/faults.md); what it writes is tensors and plain values, read here with
weights_only=True. The data position needs no conversion: a step's global batch is a function of the step alone
(trainer/sampler.py) and each rank takes its slice of it. Tested by:
.venv/bin/python -m pytest tests/distributed/test_faults_ds.py -x -q
"""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .checkpoint import safe_load, staged_dir

UNIVERSAL = "universal"


def universal_checkpoint(engine_dir: str | Path, tag: str, is_main: bool, barrier: Callable[[], None]) -> Path:
    """`engine_dir/universal` (DeepSpeed's universal layout under `tag`), converted by rank 0 on first use."""
    out = Path(engine_dir) / UNIVERSAL
    if is_main and not (out / "latest_universal").is_file():
        from .distributed import ensure_ds_accelerator

        ensure_ds_accelerator()
        from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

        with staged_dir(out, is_main=True, barrier=lambda: None) as tmp:
            args = argparse.Namespace(
                input_folder=str(Path(engine_dir) / tag),
                output_folder=str(tmp / tag),  # the converter writes latest_universal beside it
                num_extract_workers=1,
                num_merge_workers=1,
                keep_temp_folder=False,
                strict=True,
                inject_missing_state=True,
            )
            log = io.StringIO()  # the converter prints progress for every parameter
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                ds_to_universal(args)
    barrier()
    return out


def load_universal_into(
    model: nn.Module, optimizer: torch.optim.Optimizer, src: Path, tag: str, applied_steps: int
) -> None:
    """Full fp32 weights and torch-AdamW state (exp_avg, exp_avg_sq, step) of every parameter from `src/tag/zero`."""
    zero = Path(src) / tag / "zero"
    names = {p: n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            folder = zero / names[p]
            if not folder.is_dir():
                raise FileNotFoundError(f"{zero}: no state for parameter {names[p]}")
            with torch.no_grad():
                p.copy_(_tensor(folder / "fp32.pt").view_as(p))
            state = {"step": _step(folder, applied_steps)}
            for key in ("exp_avg", "exp_avg_sq"):
                state[key] = _tensor(folder / f"{key}.pt").view_as(p).to(p.device, p.dtype).clone()
            optimizer.state[p] = state


def _tensor(path: Path) -> torch.Tensor:
    """ZeRO-1/2 write {"param": tensor, "cat_dim": ...}, ZeRO-3 the bare (flat) tensor."""
    x = safe_load(path)
    return x["param"] if isinstance(x, dict) else x


def _step(folder: Path, applied_steps: int) -> torch.Tensor:
    """Adam's step count: per parameter (ZeRO-1/2), else the optimizer steps applied (ZeRO-3 keeps it only in a
    pickled DeepSpeed file, zero/optimizer_state.pt, which is not read here)."""
    if (folder / "step.pt").is_file():
        return safe_load(folder / "step.pt").float().reshape(())
    return torch.tensor(float(applied_steps))


def model_states(src: Path, tag: str) -> dict:
    """DeepSpeed's (tensor-only) model-states file of the universal checkpoint: LR scheduler and step counters."""
    files = sorted((Path(src) / tag).glob("*mp_rank_00_model_states.pt"))
    if not files:
        raise FileNotFoundError(f"{Path(src) / tag}: no DeepSpeed model-states file")
    return safe_load(files[0])
