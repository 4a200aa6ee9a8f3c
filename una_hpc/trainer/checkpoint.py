"""Checkpoints: engine state (model, optimizer, scheduler), RNG and data position, plus an HF model dir.

Layout: OUTPUT/checkpoints/step-000040/{engine/, model/, trainer_state.json}. A checkpoint is written into
`step-000040.tmp` and renamed when complete, so a run killed mid-save never leaves a half-written checkpoint that
resume would pick up. `model/` is a plain HF dir (LoRA merged) that transformers and vLLM load.

A save that fails (full disk, EFBIG, I/O error) removes its temporary directory, keeps every earlier checkpoint
(trainer.keep_checkpoints prunes only after the new one is renamed into place) and stops the run with one line.
Every file is written as tensors or JSON and read back with weights_only=True (docs/faults.md).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from ..parallel.checkpoint import CheckpointError

STEP_PREFIX = "step-"


def checkpoints_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    root = checkpoints_root(output_dir)
    done = (
        sorted(p for p in root.glob(f"{STEP_PREFIX}*") if p.is_dir() and not p.name.endswith(".tmp"))
        if root.is_dir()
        else []
    )
    return done[-1] if done else None


def rng_state() -> dict:
    """Every RNG the run draws from, as tensors and plain numbers only (loadable with weights_only=True)."""
    version, mt, gauss = random.getstate()
    key, np_mt, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, torch.tensor(mt, dtype=torch.int64), gauss],
        "numpy": [key, torch.from_numpy(np_mt.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # dropout and sampling on the GPU draw from these
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(int(x) for x in mt.tolist()), gauss))
    key, np_mt, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((key, np_mt.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    engine,
    output_dir: str | Path,
    step: int,
    trainer_state: dict,
    export_model,
    keep: int,
    extra_engines: dict | None = None,
) -> Path:
    """All ranks call this. `export_model(dir)` writes the HF model dir (collective under ZeRO-3/TP);
    `extra_engines` (name -> engine, e.g. PPO's critic) are saved under `name/`."""
    root = checkpoints_root(output_dir)
    final = root / f"{STEP_PREFIX}{step:06d}"
    tmp = root / f"{final.name}.tmp"
    previous = latest_checkpoint(output_dir)
    try:
        if engine.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        engine.barrier()
        engine.save_checkpoint(tmp / "engine", {"trainer_state": trainer_state, "rng": rng_state()})
        for name, other in (extra_engines or {}).items():
            other.save_checkpoint(tmp / name, {})
        export_model(tmp / "model")
        if engine.is_main:
            (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1))
            _replace(tmp, final)
    except Exception as e:  # torch.save reports a failed write as RuntimeError, not OSError
        # Under a launcher the failing rank exits 1 and the launcher stops the others; no collective here.
        if engine.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"saving checkpoint {final.name} failed ({_describe(e)}; {_free_space(root)}); its partial files were "
            f"removed and {f'{previous} is intact' if previous else 'no earlier checkpoint exists'}: free disk "
            "space, then resume with trainer.resume=true"
        ) from None
    if engine.is_main:
        steps = sorted(p for p in root.glob(f"{STEP_PREFIX}*") if p.is_dir() and not p.name.endswith(".tmp"))
        for old in steps[:-keep] if keep > 0 else []:  # only now: the new checkpoint is complete
            shutil.rmtree(old, ignore_errors=True)
    engine.barrier()
    return final


def _describe(e: Exception) -> str:
    text = e.strerror if isinstance(e, OSError) and e.strerror else (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {text[:200]}"


def _free_space(root: Path) -> str:
    try:
        return f"{shutil.disk_usage(root).free / 2**20:.0f} MiB free there"
    except OSError:
        return "free space unknown"


def _replace(tmp: Path, final: Path) -> None:
    """Rename tmp to final; an existing final (the same step saved again) is moved aside first, never deleted
    before its replacement is in place."""
    if not final.exists():
        os.replace(tmp, final)
        return
    aside = final.with_name(f"{final.name}.old.tmp")
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(final, aside)
    os.replace(tmp, final)
    shutil.rmtree(aside, ignore_errors=True)


def load_checkpoint(engine, path: Path, extra_engines: dict | None = None) -> dict:
    """Restore engine state and RNG; returns the trainer state (step, data position...)."""
    client = engine.load_checkpoint(path / "engine")
    for name, other in (extra_engines or {}).items():
        other.load_checkpoint(path / name)
    set_rng_state(client["rng"])
    return client["trainer_state"]
