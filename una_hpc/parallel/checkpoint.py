"""Atomic checkpoint directories and the small metadata file that says which engine wrote them.

    with staged_dir(final_dir, is_main, barrier) as tmp:   # every rank writes into tmp
        ...
    # on exit rank 0 renames tmp -> final_dir (an older final_dir is replaced), then all ranks meet again

A crash while writing leaves final_dir untouched (or absent) and a `.NAME.tmp` sibling the next save removes.
Multi-node runs need the checkpoint directory on a filesystem every node sees. Tested by:
tests/distributed/test_local_engine.py and the ZeRO-3 kill/resume scenario in test_deepspeed_engine.py
"""

from __future__ import annotations

import contextlib
import json
import pickle
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

META_FILE = "una_engine.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read safely or written completely (one line; the CLI prints it, exit 1)."""


def safe_load(path: str | Path, map_location=None):
    """torch.load with weights_only=True: tensors and plain containers only, so a planted pickle cannot run code."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: refused to load, it holds pickled Python objects, not only tensors ({first[:160]}); "
            "a una-hpc checkpoint never does: do not resume or export from this directory"
        ) from None


def _staging(final: Path) -> Path:
    return final.parent / f".{final.name}.tmp"


@contextlib.contextmanager
def staged_dir(directory: str | Path, is_main: bool, barrier: Callable[[], None]) -> Iterator[Path]:
    final = Path(directory)
    tmp = _staging(final)
    if is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    barrier()
    yield tmp
    barrier()
    if is_main:
        old = final.parent / f".{final.name}.old"
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        if old.exists():
            shutil.rmtree(old)
    barrier()


def write_meta(directory: Path, **meta) -> None:
    (directory / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))


def read_meta(directory: str | Path, expect_backend: str | None = None) -> dict:
    d = Path(directory)
    path = d / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{d}: not a una-hpc checkpoint (no {META_FILE})")
    meta = json.loads(path.read_text())
    if expect_backend is not None and meta.get("backend") != expect_backend:
        raise ValueError(
            f"{d}: written by the {meta.get('backend')} engine, cannot be loaded by the "
            f"{expect_backend} engine (consolidate it with consolidate_to_hf instead)"
        )
    return meta
