"""Reference-logp cache: per-example reference log-probabilities, computed once, keyed by data and model.

    cache = RefLogpCache(run_dir / "ref_cache", dataset_fingerprint(tokenized), model_fingerprint(ref_model))
    values = cache.load()                       # None on a miss (no file, other key, unreadable file)
    if values is None:
        values = {...}                          # the trainer runs the reference model: {example_id: [n_seq] tensor}
        cache.save(values)
    batch.ref_logps = cache.lookup(batch.example_ids.tolist())   # per-sequence ids in the batch's order

Keys: the dataset fingerprint hashes every tokenized sequence (so tokenizer, template, truncation and data changes
all change it); the model fingerprint hashes the config, every parameter's name/shape/dtype and a strided sample of
every parameter's values (plus the full bytes of small tensors). `extra` adds anything else that changes the numbers
(e.g. the compute dtype). Each key gets its own file, `ref_logps-<key>.pt`, written to a temp file and moved into
place with os.replace, so a reader sees the old file or the new one, never half of one; the file repeats its key and
is ignored when that does not match.

Values hold each example's own sequences (pairs: [chosen, rejected]); KTO's KL sequences depend on which examples
share a micro-batch and are not cached (`for_batch` returns None for a batch that has any).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..feedback import KL
from .batch import PackedBatch
from .tokenize import TokenizedExample

CACHE_VERSION = 1
SAMPLES_PER_TENSOR = 4096
"""Values hashed per parameter (evenly strided); tensors at most this size are hashed whole."""


def dataset_fingerprint(examples: Sequence[TokenizedExample]) -> str:
    """sha256 over every example's id, feedback and token ids (order-sensitive)."""
    h = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    for ex in examples:
        h.update(f"|{ex.example_id}:{ex.feedback}:{len(ex.sequences)}".encode())
        for prompt, completion in ex.sequences:
            h.update(torch.tensor(list(prompt) + [-1] + list(completion) + [-2], dtype=torch.int64).numpy().tobytes())
    return h.hexdigest()


def _tensor_sample_bytes(t: Tensor) -> bytes:
    flat = t.detach().reshape(-1)
    if flat.numel() > SAMPLES_PER_TENSOR:
        step = flat.numel() // SAMPLES_PER_TENSOR
        flat = flat[::step][:SAMPLES_PER_TENSOR]
    return flat.contiguous().cpu().view(torch.uint8).numpy().tobytes()


def model_fingerprint(model_or_state: Any, skip: Sequence[str] = ()) -> str:
    """sha256 of a model (nn.Module) or a state dict: config, parameter names/shapes/dtypes and sampled values.
    Names containing any of `skip` are left out (a LoRA reference = base weights: skip=("lora_",))."""
    h = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    config = getattr(model_or_state, "config", None)
    if config is not None and hasattr(config, "to_json_string"):
        h.update(config.to_json_string(use_diff=False).encode())
    state = model_or_state if isinstance(model_or_state, Mapping) else model_or_state.state_dict()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, Tensor) or any(part in name for part in skip):
            continue
        h.update(f"|{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(_tensor_sample_bytes(t))
    return h.hexdigest()


def split_by_example(batch: PackedBatch, ref_logps: Tensor) -> dict[int, Tensor]:
    """Batch-order reference logps [S] -> {example_id: its sequences' values}, KL sequences left out."""
    if tuple(ref_logps.shape) != (batch.num_seqs,):
        raise ValueError(f"ref_logps must be [{batch.num_seqs}], got {tuple(ref_logps.shape)}")
    keep = batch.targets.kind != KL
    out: dict[int, list[float]] = {}
    for e, v in zip(batch.example_ids[keep].tolist(), ref_logps.detach().float().cpu()[keep].tolist()):
        out.setdefault(int(e), []).append(v)
    return {e: torch.tensor(v, dtype=torch.float32) for e, v in out.items()}


class RefLogpCache:
    """One cache file per (dataset, model, extra) key under `cache_dir`."""

    def __init__(self, cache_dir: str | os.PathLike, dataset_fp: str, model_fp: str, extra: str = ""):
        self.cache_dir = Path(cache_dir)
        self.key_fields = {"dataset": dataset_fp, "model": model_fp, "extra": extra, "version": CACHE_VERSION}
        self.key = hashlib.sha256(repr(sorted(self.key_fields.items())).encode()).hexdigest()[:24]
        self.path = self.cache_dir / f"ref_logps-{self.key}.pt"
        self._values: dict[int, Tensor] | None = None

    def load(self) -> dict[int, Tensor] | None:
        """The cached values, or None when there is no valid file for this key."""
        try:
            blob = torch.load(self.path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError):
            return None
        if not isinstance(blob, dict) or blob.get("key") != self.key_fields:
            return None
        ids, offsets, flat = blob["ids"].tolist(), blob["offsets"].tolist(), blob["values"]
        self._values = {e: flat[offsets[k] : offsets[k + 1]].clone() for k, e in enumerate(ids)}
        return self._values

    def save(self, values: Mapping[int, Tensor]) -> Path:
        """Write all values atomically (temp file in the cache dir, then os.replace)."""
        ids = sorted(int(e) for e in values)
        parts = [torch.as_tensor(values[e], dtype=torch.float32).detach().cpu().reshape(-1) for e in ids]
        offsets = torch.tensor([0] + [p.numel() for p in parts], dtype=torch.int64).cumsum(0)
        blob = {
            "key": self.key_fields,
            "ids": torch.tensor(ids, dtype=torch.int64),
            "offsets": offsets,
            "values": torch.cat(parts) if parts else torch.zeros(0),
        }
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".ref_logps-", suffix=".tmp", dir=self.cache_dir)
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(blob, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._values = {e: p for e, p in zip(ids, parts)}
        return self.path

    def lookup(self, example_ids: Sequence[int]) -> Tensor:
        """Per-sequence example ids (a batch's `example_ids`, no KL sequences) -> [S] values: the k-th occurrence of
        an id takes that example's k-th sequence value. KeyError (one line) on anything not cached."""
        values = self._values if self._values is not None else self.load()
        if values is None:
            raise KeyError(f"no reference-logp cache at {self.path}")
        seen: dict[int, int] = {}
        out = []
        for e in (int(x) for x in example_ids):
            k = seen.get(e, 0)
            seen[e] = k + 1
            v = values.get(e)
            if v is None or k >= v.numel():
                raise KeyError(f"reference-logp cache {self.path.name} has no value for example {e} sequence {k}")
            out.append(v[k])
        return torch.stack(out) if out else torch.zeros(0)

    def for_batch(self, batch: PackedBatch) -> Tensor | None:
        """[S] cached reference logps for a collated batch, or None (KL sequences present, or any value missing)."""
        if bool((batch.targets.kind == KL).any()):
            return None
        try:
            return self.lookup(batch.example_ids.tolist())
        except KeyError:
            return None
