"""Checkpoints: engine state (model, optimizer, scheduler), RNG and data position, plus an HF model dir.

Layout: OUTPUT/checkpoints/step-000040/{engine/, model/, trainer_state.json}. A checkpoint is written into
`step-000040.tmp` and renamed when complete, so a run killed mid-save never leaves a half-written checkpoint that
resume would pick up. `model/` is a plain HF dir (LoRA merged) that transformers and vLLM load.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

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
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # dropout and sampling on the GPU draw from these
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
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
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        steps = sorted(p for p in root.glob(f"{STEP_PREFIX}*") if p.is_dir() and not p.name.endswith(".tmp"))
        for old in steps[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    engine.barrier()
    return final


def load_checkpoint(engine, path: Path, extra_engines: dict | None = None) -> dict:
    """Restore engine state and RNG; returns the trainer state (step, data position...)."""
    client = engine.load_checkpoint(path / "engine")
    for name, other in (extra_engines or {}).items():
        other.load_checkpoint(path / name)
    set_rng_state(client["rng"])
    return client["trainer_state"]
