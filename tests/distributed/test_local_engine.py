"""Single-process LocalEngine and the pieces both engines share (schedule, param groups, DS config, consolidation).

.venv/bin/python -m pytest tests/distributed/test_local_engine.py -q      (about 20 s)
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from una_hpc.config import Config
from una_hpc.losses import LOSSES, SCORE, SeqTargets
from una_hpc.parallel import (
    build_ds_config,
    build_engine,
    consolidate_to_hf,
    lr_lambda,
    merge_lora,
    param_groups,
    reference_seq_logps,
    select_backend,
)
from una_hpc.parallel.checkpoint import staged_dir
from una_hpc.parallel.local_engine import LocalEngine


def make_cfg(**optim) -> Config:
    cfg = Config()
    cfg.parallel.backend = "none"
    cfg.optim.lr, cfg.optim.warmup_steps, cfg.optim.weight_decay, cfg.optim.max_grad_norm = 3e-3, 2, 0.01, 1.0
    cfg.trainer.max_steps = 8
    cfg.loss.beta = 0.5
    for k, v in optim.items():
        setattr(cfg.optim, k, v)
    return cfg


def load(model_dir) -> LlamaForCausalLM:
    return LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)


def batch(vocab: int, n: int = 6, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, 10), generator=g)
    labels = torch.cat([ids[:, 1:], torch.full((n, 1), -100)], dim=1)
    labels[:, :3] = -100
    scores = torch.rand(n, generator=g)
    return ids, labels, scores


def micro_loss(engine, cfg, ids, labels, scores, ref, total: int):
    """UNA-score loss of one micro-batch, normalized by the whole step's example count."""
    hidden = engine.hidden_states(input_ids=ids)
    seq_index = torch.arange(len(ids)).unsqueeze(1).expand_as(ids)
    with engine.gathered_params([engine.output_weight()]):
        logps, _ = engine.seq_logps(hidden, labels, seq_index, len(ids))
    kind = torch.full((len(ids),), SCORE)
    head = LOSSES["una_score"]
    return head.loss(
        head(logps, ref, SeqTargets(kind, torch.full_like(kind, -1), scores), cfg.loss), {"score": total}, cfg.loss
    )


def train_step(engine, cfg, data, ref, split: list[int]) -> dict:
    ids, labels, scores = data
    total, start, loss = len(ids), 0, 0.0
    for n in split:
        sl = slice(start, start + n)
        part = micro_loss(engine, cfg, ids[sl], labels[sl], scores[sl], ref[sl], total)
        engine.backward(part)
        loss, start = loss + float(part.detach()), start + n
    return {"loss": loss, **engine.step()}


@torch.no_grad()
def initial_ref(model, data) -> torch.Tensor:
    ids, labels, _ = data
    h = model.model(input_ids=ids).last_hidden_state
    seq_index = torch.arange(len(ids)).unsqueeze(1).expand_as(ids)
    return reference_seq_logps(
        h.reshape(-1, h.shape[-1]), model.lm_head.weight, labels.reshape(-1), seq_index.reshape(-1), len(ids)
    )[0]


def test_lr_schedule_and_param_groups(tiny_model_dir):
    o = make_cfg(warmup_steps=2, schedule="cosine").optim
    f = lr_lambda(o, max_steps=6)
    assert [f(0), f(1)] == [0.5, 1.0]
    assert f(2) == 1.0 and f(4) == pytest.approx(0.5) and 0 < f(5) < 0.5
    lin = lr_lambda(make_cfg(warmup_steps=0, schedule="linear").optim, max_steps=4)
    assert [lin(s) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert lr_lambda(make_cfg(schedule="constant").optim, 4)(3) == 1.0
    model = load(tiny_model_dir)
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim == 2 for p in decay["params"]) and decay["weight_decay"] == 0.1
    assert {names[id(p)].split(".")[-2] for p in no_decay["params"]} == {
        "input_layernorm",
        "post_attention_layernorm",
        "norm",
    }
    assert no_decay["weight_decay"] == 0.0


def test_backend_selection_and_ds_config(monkeypatch):
    cfg = make_cfg()
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cfg.parallel.backend = "auto"
    assert select_backend(cfg) == "local"
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert select_backend(cfg) == "deepspeed"
    cfg.parallel.backend = "none"
    with pytest.raises(ValueError, match="2-process launch"):
        select_backend(cfg)
    cfg.parallel.zero_stage, cfg.parallel.tp_size, cfg.trainer.dtype = 3, 2, "bfloat16"
    ds = build_ds_config(cfg)
    assert ds["zero_optimization"]["stage"] == 3 and ds["managed_gradient_accumulation"] is False
    assert ds["tensor_parallel"] == {"autotp_size": 2} and ds["bf16"] == {"enabled": True}
    assert ds["optimizer"]["params"]["torch_adam"] and ds["gradient_clipping"] == 1.0
    assert ds["optimizer"]["params"]["lr"] == cfg.optim.lr
    cfg.parallel.zero_stage = 0
    with pytest.raises(ValueError, match="bfloat16"):
        build_ds_config(cfg)
    cfg.trainer.dtype = "float32"
    assert build_ds_config(cfg)["managed_gradient_accumulation"] is True
    cfg.parallel.offload_param = True
    with pytest.raises(ValueError, match="offload_param"):
        build_ds_config(cfg)


def test_grads_equal_across_micro_batch_splits(tiny_model_dir):
    """With the global normalizer, one micro-batch or three give the same gradients (the engine never rescales)."""
    cfg = make_cfg()
    data = batch(load(tiny_model_dir).config.vocab_size)
    grads = []
    for split in ([6], [3, 3], [1, 2, 3]):
        model = load(tiny_model_dir)
        engine = LocalEngine(model, cfg)
        ref = initial_ref(model, data) - 1.0  # r != 0 so the loss has a non-trivial gradient
        ids, labels, scores = data
        start = 0
        for n in split:
            sl = slice(start, start + n)
            engine.backward(micro_loss(engine, cfg, ids[sl], labels[sl], scores[sl], ref[sl], len(ids)))
            start += n
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert grads[0].abs().max() > 1e-4
    for g in grads[1:]:
        torch.testing.assert_close(g, grads[0], rtol=1e-5, atol=1e-7)


def _same_state(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    return a == b


def test_checkpoint_round_trip_restores_optimizer_and_scheduler(tiny_model_dir, tmp_path):
    cfg = make_cfg()
    model = load(tiny_model_dir)
    data = batch(model.config.vocab_size)
    ref = initial_ref(model, data)
    engine = build_engine(model, cfg)
    assert isinstance(engine, LocalEngine) and engine.is_main and engine.world_size == 1
    for _ in range(3):
        train_step(engine, cfg, data, ref, [2, 4])
    engine.save_checkpoint(tmp_path / "ckpt", {"step": 3, "note": "x"})
    assert not (tmp_path / ".ckpt.tmp").exists()
    saved_opt = copy.deepcopy(engine.optimizer.state_dict())
    saved_sched = copy.deepcopy(engine.scheduler.state_dict())
    after = [train_step(engine, cfg, data, ref, [6]) for _ in range(3)]

    fresh = LocalEngine(load(tiny_model_dir), cfg)
    assert fresh.load_checkpoint(tmp_path / "ckpt") == {"step": 3, "note": "x"}
    assert _same_state(fresh.optimizer.state_dict(), saved_opt)
    assert _same_state(fresh.scheduler.state_dict(), saved_sched) and saved_sched["last_epoch"] == 3
    assert fresh.lr == pytest.approx(cfg.optim.lr * lr_lambda(cfg.optim, 8)(3))
    restored = [train_step(fresh, cfg, data, ref, [6]) for _ in range(3)]
    assert restored == after  # bit-identical continuation
    assert after[-1]["loss"] < after[0]["loss"]
    for a, b in zip(engine.module.parameters(), fresh.module.parameters()):
        assert torch.equal(a, b)


def test_staged_dir_keeps_the_old_checkpoint_on_a_crash(tmp_path):
    final = tmp_path / "ckpt"
    with staged_dir(final, True, lambda: None) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with staged_dir(final, True, lambda: None) as tmp:
            (tmp / "a").write_text("2")
            raise RuntimeError("crash while writing")
    assert (final / "a").read_text() == "1"
    with staged_dir(final, True, lambda: None) as tmp:  # the next save cleans the leftover temp dir
        (tmp / "a").write_text("3")
    assert (final / "a").read_text() == "3" and not (tmp_path / ".ckpt.tmp").exists()


def test_consolidate_local_engine_and_lora_merge(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    cfg = make_cfg()
    base = load(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # LoRA B starts at zero: make the adapter matter
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    engine = build_engine(peft_model, cfg)
    ids = batch(base.config.vocab_size)[0]
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
    with pytest.raises(ValueError, match="lora_scale"):
        merge_lora(engine.consolidated_state_dict(), None)
    out = consolidate_to_hf(engine, tmp_path / "hf", tiny_model_dir, lora_scale=8 / 4)
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.no_grad():
        got = merged(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (out / "tokenizer.json").is_file() and (out / "model.safetensors").is_file()

    engine.save_checkpoint(tmp_path / "ckpt", {})  # offline path: from the checkpoint directory
    offline = consolidate_to_hf(tmp_path / "ckpt", tmp_path / "hf2", tiny_model_dir, lora_scale=2.0)
    again = AutoModelForCausalLM.from_pretrained(offline, dtype=torch.float32)
    for (k, a), b in zip(merged.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    assert math.isfinite(float(got.abs().max()))
