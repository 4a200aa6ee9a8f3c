"""The policy's weights as (HF state_dict name, tensor) pairs of the *plain* model, ready for an engine's reload.

    engine.sync_weights(policy_weights_for_sync(policy))

- Plain HF model: its state_dict names and tensors (detached references, no copies).
- PEFT LoRA model: every adapted layer's weight is yielded merged, W + scale * B @ A (+ lora bias), computed into a
  new tensor one layer at a time; the training model is not touched (no merge/unmerge, no in-place writes). Names
  are mapped back to the base model's HF names (`...q_proj.base_layer.weight` -> `...q_proj.weight`; lora_A/lora_B
  are not yielded; `modules_to_save` copies replace their originals). A disabled adapter yields the base weights.
- Tied weights (e.g. lm_head tied to embed_tokens) are yielded once, under the first name (the embedding): the
  checkpoint of a tied model has no separate lm_head, and vLLM ties the two itself.
- DeepSpeed/DDP wrappers (`.module`) are unwrapped. ZeRO-3 partitioned parameters: `weights_for_sync` (or
  `zero3_weights_for_sync`) gathers them bucket by bucket, so no rank holds more than one bucket of full weights
  (plus a LoRA layer's merged copy) beyond its partition; every rank must consume the iterator (collective).

Tested by: .venv/bin/python -m pytest tests/unit/test_rollout_weights.py -q
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ..models.policy import base_causal_lm

# Strip DeepSpeed / DDP `.module` wrappers and a PeftModel shell, returning the HF model (LoRA layers in it).
unwrap_hf_model = base_causal_lm


def _lora_classes() -> tuple[type, type] | None:
    try:
        from peft.tuners.lora import LoraLayer
        from peft.utils import ModulesToSaveWrapper
    except ImportError:  # peft not installed: no model can have LoRA layers
        return None
    return LoraLayer, ModulesToSaveWrapper


# Internally each weight carries `fresh`: True for a tensor computed here (a merged LoRA weight), which can never be
# tied and whose memory may be reused by the allocator after the consumer drops it, so it must not enter the
# tied-weight bookkeeping (keyed by storage address).
_Item = tuple[str, Tensor, bool]


@torch.no_grad()
def _merged_lora(name: str, layer: nn.Module) -> Iterator[_Item]:
    """The base layer's parameters with the active, not-yet-merged adapters added (new tensors)."""
    base = layer.get_base_layer()
    adapters = (
        []
        if layer.disable_adapters
        else [a for a in layer.active_adapters if a in layer.lora_A and a not in layer.merged_adapters]
    )
    variants = [a for a in adapters if a in getattr(layer, "lora_variant", {})]
    if variants:
        raise NotImplementedError(
            f"{name}: LoRA variant adapters {variants} (e.g. DoRA) cannot be merged for weight sync; use plain LoRA"
        )
    for pname, p in base.named_parameters(recurse=False):
        value = p.detach()
        if pname == "weight" and adapters:
            value = value.clone()
            for a in adapters:
                value += layer.get_delta_weight(a).to(value.dtype)
        elif pname == "bias" and any(layer.lora_bias.get(a, False) for a in adapters):
            value = value.clone()
            for a in adapters:
                if layer.lora_bias.get(a, False):
                    value += (layer.lora_B[a].bias * layer.scaling[a]).to(value.dtype)
        yield f"{name}.{pname}", value, value.data_ptr() != p.data_ptr()
    for bname, b in base.named_buffers(recurse=False):
        if bname not in base._non_persistent_buffers_set:
            yield f"{name}.{bname}", b.detach(), False


def _walk(module: nn.Module, prefix: str, lora: tuple[type, type] | None) -> Iterator[_Item]:
    if lora is not None:
        lora_layer, to_save = lora
        if isinstance(module, lora_layer):
            yield from _merged_lora(prefix.rstrip("."), module)
            return
        if isinstance(module, to_save):
            active = module.active_adapter if isinstance(module.active_adapter, str) else module.active_adapter[0]
            use_copy = not module.disable_adapters and active in module.modules_to_save
            inner = module.modules_to_save[active] if use_copy else module.original_module
            yield from _walk(inner, prefix, lora)
            return
    for pname, p in module.named_parameters(recurse=False):
        yield prefix + pname, p.detach(), False
    for bname, b in module.named_buffers(recurse=False):
        if bname not in module._non_persistent_buffers_set:
            yield prefix + bname, b.detach(), False
    for cname, child in module.named_children():
        yield from _walk(child, f"{prefix}{cname}.", lora)


def _is_zero3(p: nn.Parameter) -> bool:
    return hasattr(p, "ds_numel")


def _full_bytes(params: list[nn.Parameter]) -> int:
    """Bytes of these parameters once gathered (ZeRO-3 keeps the full numel as ds_numel)."""
    return sum(getattr(p, "ds_numel", p.numel()) * p.element_size() for p in params)


def _units(module: nn.Module, prefix: str, lora: tuple[type, type] | None) -> Iterator[tuple[str, nn.Module, bool]]:
    """(prefix, module, whole) in state-dict order: a LoRA layer or modules_to_save wrapper is one unit with all of
    its parameters (merged together); any other module contributes only its own direct parameters."""
    if lora is not None and isinstance(module, lora):
        yield prefix, module, True
        return
    yield prefix, module, False
    for cname, child in module.named_children():
        yield from _units(child, f"{prefix}{cname}.", lora)


def _unit_params(module: nn.Module, whole: bool, seen: set[int]) -> list[nn.Parameter]:
    params = [p for p in module.parameters(recurse=whole) if id(p) not in seen]
    seen.update(id(p) for p in params)
    return params


def _unit_items(prefix: str, module: nn.Module, whole: bool, lora, params: list[nn.Parameter]) -> Iterator[_Item]:
    if whole:
        yield from _walk(module, prefix, lora)
        return
    own = {id(p) for p in params}  # a tied parameter already sent under its first name is skipped
    for pname, p in module.named_parameters(recurse=False):
        if id(p) in own:
            yield prefix + pname, p.detach(), False
    for bname, b in module.named_buffers(recurse=False):
        if bname not in module._non_persistent_buffers_set:
            yield prefix + bname, b.detach(), False


def zero3_weights_for_sync(model: nn.Module, bucket_bytes: int, gather=None) -> Iterator[tuple[str, Tensor]]:
    """policy_weights_for_sync for a ZeRO-3 partitioned model: parameters are gathered in buckets of at most
    `bucket_bytes` full bytes (one oversized unit is a bucket alone), each bucket's (merged) weights are yielded
    while it is gathered, then it is partitioned again. Collective: every rank must consume the whole iterator
    (gathers happen in the same order on every rank). `gather(params)` is the context that gathers
    (default: deepspeed.zero.GatheredParameters, read-only); the consumer must copy each tensor before the next."""
    if gather is None:
        import deepspeed

        def gather(params):
            return deepspeed.zero.GatheredParameters(params, modifier_rank=None)

    hf, lora, seen = unwrap_hf_model(model), _lora_classes(), set()
    bucket: list[tuple[str, nn.Module, bool, list[nn.Parameter]]] = []
    size = 0

    def flush() -> Iterator[tuple[str, Tensor]]:
        params = [p for *_, ps in bucket for p in ps if _is_zero3(p)]
        with gather(params):
            for prefix, module, whole, ps in bucket:
                for name, tensor, _ in _unit_items(prefix, module, whole, lora, ps):
                    yield name, tensor

    for prefix, module, whole in _units(hf, "", lora):
        params = _unit_params(module, whole, seen)
        unit = _full_bytes(params)
        if bucket and size + unit > bucket_bytes:
            yield from flush()
            bucket, size = [], 0
        bucket.append((prefix, module, whole, params))
        size += unit
    if bucket:
        yield from flush()


def policy_weights_for_sync(model: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """(HF name, tensor) for every weight of the plain model; lazy, LoRA layers merged on the fly."""
    hf = unwrap_hf_model(model)
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    for name, tensor, fresh in _walk(hf, "", _lora_classes()):
        if not fresh:
            key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
            if key in seen:  # a tied weight, already yielded under its first name
                continue
            seen.add(key)
        yield name, tensor


def weights_for_sync(model: nn.Module, bucket_mb: float = 256.0) -> Iterator[tuple[str, Tensor]]:
    """The sync iterator that fits the model: bucketed ZeRO-3 gathers when its parameters are partitioned
    (rollout.sync_bucket_mb), else policy_weights_for_sync."""
    if any(_is_zero3(p) for p in unwrap_hf_model(model).parameters()):
        return zero3_weights_for_sync(model, int(bucket_mb * 2**20))
    return policy_weights_for_sync(model)
