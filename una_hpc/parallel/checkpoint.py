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
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

META_FILE = "una_engine.json"


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
