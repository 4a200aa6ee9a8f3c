"""Reference-logp cache: hit after save, miss on another dataset or model, lookup in a batch's sequence order,
atomic write (no temp files, a truncated file is a miss), model fingerprints."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from una_hpc.data import (
    RefLogpCache,
    TokenizedExample,
    collate,
    dataset_fingerprint,
    model_fingerprint,
    split_by_example,
)
from una_hpc.losses import KL


def _examples(shift: int = 0):
    return [
        TokenizedExample(0, "pairwise", [([5, 6], [7, 8 + shift]), ([5, 6], [9])], math.nan),
        TokenizedExample(1, "binary", [([5], [10, 11])], 1.0),
        TokenizedExample(2, "score", [([12, 13], [14])], 0.3),
        TokenizedExample(3, "binary", [([15], [16])], 0.0),
    ]


def _values():
    return {0: torch.tensor([-1.5, -2.5]), 1: torch.tensor([-3.0]), 2: torch.tensor([-4.0]), 3: torch.tensor([-5.0])}


def test_hit_after_save_and_lookup_in_batch_order(tmp_path):
    exs = _examples()
    cache = RefLogpCache(tmp_path, dataset_fingerprint(exs), "model-a")
    assert cache.load() is None
    cache.save(_values())
    fresh = RefLogpCache(tmp_path, dataset_fingerprint(_examples()), "model-a")
    loaded = fresh.load()
    assert loaded is not None and set(loaded) == {0, 1, 2, 3}
    assert all(torch.equal(loaded[k], v) for k, v in _values().items())
    batch = collate([exs[2], exs[0], exs[1]], 0, row_length=8)  # canonical order: 2, 0 chosen, 0 rejected, 1
    assert batch.example_ids.tolist() == [2, 0, 0, 1]
    assert fresh.lookup(batch.example_ids.tolist()).tolist() == [-4.0, -1.5, -2.5, -3.0]
    assert fresh.for_batch(batch).tolist() == [-4.0, -1.5, -2.5, -3.0]
    with pytest.raises(KeyError, match="no value for example 9"):
        fresh.lookup([9])


def test_kl_batches_are_not_served_from_the_cache(tmp_path):
    cache = RefLogpCache(tmp_path, dataset_fingerprint(_examples()), "m")
    cache.save(_values())
    batch = collate(_examples(), 0, kto_kl=True)
    assert (batch.targets.kind == KL).any() and cache.for_batch(batch) is None


def test_split_by_example_round_trips_through_the_cache(tmp_path):
    batch = collate(_examples(), 0, row_length=6, kto_kl=True)
    ref = torch.arange(batch.num_seqs, dtype=torch.float32) - 10
    values = split_by_example(batch, ref)
    keep = batch.targets.kind != KL
    assert sorted(values) == [0, 1, 2, 3] and sum(v.numel() for v in values.values()) == int(keep.sum())
    cache = RefLogpCache(tmp_path, "d", "m")
    cache.save(values)
    assert torch.equal(RefLogpCache(tmp_path, "d", "m").lookup(batch.example_ids[keep].tolist()), ref[keep])


def test_other_dataset_or_model_or_extra_is_a_miss(tmp_path):
    fp = dataset_fingerprint(_examples())
    RefLogpCache(tmp_path, fp, "model-a").save(_values())
    assert dataset_fingerprint(_examples(shift=1)) != fp
    assert RefLogpCache(tmp_path, dataset_fingerprint(_examples(shift=1)), "model-a").load() is None
    assert RefLogpCache(tmp_path, fp, "model-b").load() is None
    assert RefLogpCache(tmp_path, fp, "model-a", extra="bfloat16").load() is None
    assert RefLogpCache(tmp_path, fp, "model-a").load() is not None


def test_atomic_write_leaves_no_temp_and_a_torn_file_is_a_miss(tmp_path):
    cache = RefLogpCache(tmp_path, "d", "m")
    path = cache.save(_values())
    cache.save({k: v * 2 for k, v in _values().items()})  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert torch.equal(RefLogpCache(tmp_path, "d", "m").load()[0], torch.tensor([-3.0, -5.0]))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # what a non-atomic writer could leave behind
    assert RefLogpCache(tmp_path, "d", "m").load() is None


def test_model_fingerprint_tracks_weights_and_config(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    fp = model_fingerprint(model)
    assert fp == model_fingerprint(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert model_fingerprint(state) != fp  # no config in a bare state dict
    assert model_fingerprint(state) == model_fingerprint({k: v.clone() for k, v in state.items()})
    with torch.no_grad():
        next(iter(model.parameters())).view(-1)[0] += 1.0  # the first sampled element of the first tensor
    assert model_fingerprint(model) != fp
    lora = dict(state, **{"layer.lora_A.weight": torch.randn(2, 2)})
    assert model_fingerprint(lora, skip=("lora_",)) == model_fingerprint(state)
    assert model_fingerprint(lora) != model_fingerprint(state)
    bf16 = {k: v.to(torch.bfloat16) for k, v in state.items()}
    assert model_fingerprint(bf16) != model_fingerprint(state)
