"""The training engine the trainer is written against: one interface, a single-process and a DeepSpeed implementation.

    engine = build_engine(model, cfg)              # una_hpc.parallel.factory: LocalEngine or DeepSpeedEngine
    for step in range(cfg.trainer.max_steps):
        counts = engine.sum_over_dp(local_example_counts)      # the global normalizer of this optimizer step
        for mb in micro_batches:                               # this data-parallel rank's share (engine.dp_rank)
            with engine.autocast():
                hidden = engine.hidden_states(input_ids=..., position_ids=..., attention_mask=...)
            logps, ref = engine.seq_logps(hidden, labels, seq_index, num_seqs)   # any sharding of the lm_head
            loss = head.loss(head(logps, ref_logps, targets, cfg.loss), counts, cfg.loss)
            engine.backward(loss)
        stats = engine.step()                                  # {"grad_norm", "lr"}

ZeRO-3 and the lm_head: seq_logps gathers the (partitioned) lm_head weight for the kernel and keeps it gathered
until the end of the next backward(), whose kernel backward reads it; gradients reach the partitioned parameter
through DeepSpeed's hooks. `with engine.gathered_params([engine.output_weight()]):` around seq_logps and backward
(or around the whole micro-batch) does the same explicitly and is a no-op without ZeRO-3.

Loss-scaling contract. `backward(loss)` is called once per micro-batch with a loss already divided by the whole
optimizer step's example counts summed over all data-parallel ranks, and `step()` once per optimizer step. After the
backward calls of one step, every rank's gradients equal d(sum over data-parallel ranks and micro-batches of
loss)/d(theta): the engine never divides by the number of micro-batches (their count may vary from step to step),
and DeepSpeedEngine multiplies the loss by the data-parallel world size to undo DeepSpeed's gradient averaging.
Tensor-parallel ranks of one data-parallel replica see the same micro-batches and count them once.

Non-finite steps (docs/faults.md). `backward` multiplies a non-finite loss by NaN, so its gradients are NaN; the
global gradient norm, reduced over all ranks, is then NaN on every rank, and `step()` applies nothing (no optimizer
or scheduler step, gradients zeroed) and returns "skipped": 1.0. Every rank decides from the same global norm.

Training forwards go through the engine (`engine(...)` or `engine.hidden_states(...)`), never `engine.module(...)`:
DeepSpeed's forward does per-micro-batch bookkeeping (ZeRO hook state, the TP input check). `engine.module` is the
model itself (HF parameter names) for attribute access, evaluation and generation.

Tested by: .venv/bin/python -m pytest tests/distributed -q
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..config import Config
from ..feedback import IGNORE_INDEX
from ..kernels import seq_logps
from ..models.output_head import OutputHead, output_head
from .vocab_parallel import vocab_parallel_seq_logps
from .vocab_parallel_kernel import kernel_applies, kernel_vocab_parallel_seq_logps

# logits_to_keep with no positions: the HF causal-LM forward runs its body and skips the [T, V] logits.
_NO_LOGITS = torch.empty(0, dtype=torch.long)


class TrainEngine(ABC):
    """What the trainer calls; see the module docstring for the loss-scaling contract."""

    cfg: Config
    rank: int = 0
    world_size: int = 1
    dp_rank: int = 0
    dp_world_size: int = 1
    dp_group: Any = None
    """Data-parallel process group (None for a single process): shard data and sum example counts over it."""
    tp_group: Any = None
    """Tensor-parallel process group, None without tensor parallelism."""
    tp_size: int = 1
    tp_logps_backend: str = "auto"
    """Vocab-parallel seq_logps: "auto" (the fused kernel where seq_logps(backend="auto") picks it: CUDA), "triton"
    (forced; on CPU under TRITON_INTERPRET=1) or "torch" (chunked torch). Set per engine (tests), not globally."""
    _release_after_backward: list  # set per instance in __init__ of the implementations

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    @abstractmethod
    def module(self) -> nn.Module:
        """The model (HF names). Train through the engine's forward, not through this object."""

    @abstractmethod
    def __call__(self, *args, **kwargs) -> Any:
        """Training forward of the wrapped model."""

    @abstractmethod
    def backward(self, loss: Tensor) -> None:
        """Accumulate d(loss)/d(theta); see the contract in the module docstring."""

    @abstractmethod
    def step(self) -> dict[str, float]:
        """Clip to optim.max_grad_norm, optimizer step, scheduler step, zero grads.

        Returns {"grad_norm": global norm before clipping, "lr": the learning rate this step used, "skipped": 1.0
        when a non-finite loss or gradient norm kept the step from being applied (on every rank), else 0.0}.
        """

    @property
    @abstractmethod
    def lr(self) -> float:
        """Learning rate the next step() will use."""

    @abstractmethod
    def save_checkpoint(self, directory: str | Path, client_state: dict) -> None:
        """Model, optimizer, scheduler and client_state into `directory`, written to a temp dir then renamed."""

    @abstractmethod
    def load_checkpoint(self, directory: str | Path) -> dict:
        """Restore model, optimizer and scheduler from save_checkpoint's `directory`; returns client_state."""

    @abstractmethod
    def consolidated_state_dict(self) -> dict[str, Tensor] | None:
        """Full state dict with the module's names on rank 0 (None elsewhere). Collective: call on every rank."""

    def gathered_params(self, params: Iterable[nn.Parameter]) -> contextlib.AbstractContextManager:
        """ZeRO-3: gather `params` (read-only, gradients still flow to them); otherwise a no-op."""
        return contextlib.nullcontext()

    def autocast(self) -> contextlib.AbstractContextManager:
        """The compute-dtype context for forwards (trainer.dtype)."""
        return contextlib.nullcontext()

    def barrier(self) -> None:
        if dist.is_initialized():
            dist.barrier()

    # ---- shared helpers built on the abstract interface ----

    @staticmethod
    def poison_nonfinite(loss: Tensor) -> Tensor:
        """The loss unchanged (x 1.0), or x NaN when it is not finite: its gradients then all turn NaN, so the
        global-norm check skips the step on every rank (no host sync here)."""
        ok = torch.isfinite(loss.detach())
        return loss * torch.where(ok, torch.ones_like(loss), torch.full_like(loss, float("nan"))).detach()

    def output_head(self) -> OutputHead:
        """The lm_head (weight [V, H] or this rank's [V/tp, H] vocabulary shard, its bias) and the logit transform."""
        if getattr(self, "_cached_head", None) is None:  # the parameters are fixed objects; ZeRO-3 swaps their data
            self._cached_head = output_head(self.module)
        return self._cached_head

    def output_weight(self) -> nn.Parameter:
        """The lm_head weight: [V, H], or this rank's [V/tp, H] vocabulary shard under tensor parallelism."""
        return self.output_head().weight

    def hidden_states(self, **inputs) -> Tensor:
        """Final (normed) hidden states [B, L, H] of a causal LM, computed through the engine, without logits."""
        out = self(**inputs, output_hidden_states=True, logits_to_keep=_NO_LOGITS.to(self.device), use_cache=False)
        return out.hidden_states[-1]

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def seq_logps(
        self,
        hidden: Tensor,
        labels: Tensor,
        seq_index: Tensor,
        num_seqs: int,
        *,
        ref_hidden: Tensor | None = None,
        ref_weight: Tensor | None = None,
        ref_bias: Tensor | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> tuple[Tensor, Tensor | None]:
        """Per-sequence logps of the policy (and reference) through the model's output head, whatever its sharding.

        hidden [T, H] or [B, L, H] (flattened with labels/seq_index). The head's bias, scale and softcap come from
        `output_head` (the reference shares scale and softcap; ref_weight / ref_bias default to the policy's). Under
        tensor parallelism the vocabulary-parallel path runs over tp_group (ref_weight, when given, must be the
        reference's shard of the same rows), on the fused kernel where `tp_logps_backend` picks it, policy and
        reference in one pass; otherwise una_hpc.kernels.seq_logps. Under ZeRO-3 the weight and bias
        are gathered here if the caller has not, and stay gathered until the end of the next backward() (the
        kernel's backward reads them).
        """
        hidden, labels, seq_index = hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1), seq_index.reshape(-1)
        if ref_hidden is not None:
            ref_hidden = ref_hidden.reshape(-1, ref_hidden.shape[-1])
        head = self.output_head()
        releases = [
            r
            for p in (head.weight, head.bias)
            if p is not None
            for r in [self._prepare_output_weight(p)]
            if r is not None
        ]
        try:
            logps, ref = self._seq_logps(
                head, hidden, labels, seq_index, num_seqs, ref_hidden, ref_weight, ref_bias, ignore_index
            )
        except BaseException:
            for release in releases:
                release()
            raise
        for release in releases:
            if torch.is_grad_enabled() and logps.requires_grad:
                self._release_after_backward.append(release)  # the kernel's backward reads the weight
            else:
                release()
        return logps, ref

    def _seq_logps(
        self, head: OutputHead, hidden, labels, seq_index, num_seqs, ref_hidden, ref_weight, ref_bias, ignore_index
    ):
        weight = head.weight
        if weight.dim() != 2 or weight.numel() == 0:
            raise RuntimeError(f"the lm_head weight has shape {tuple(weight.shape)}: it is still partitioned")
        dtype = hidden.dtype
        bias = None if head.bias is None else head.bias.to(dtype)
        ref_bias = None if ref_bias is None else ref_bias.to(dtype)
        if self.tp_size > 1 and getattr(weight, "tensor_model_parallel", False):
            vocab_start = self._vocab_start(weight)
            kw = dict(scale=head.scale, softcap=head.softcap, ignore_index=ignore_index)
            if kernel_applies(hidden, weight, self.tp_logps_backend):  # policy and reference in one kernel pass
                has_ref = ref_hidden is not None
                return kernel_vocab_parallel_seq_logps(
                    hidden,
                    weight,
                    vocab_start,
                    labels,
                    seq_index,
                    num_seqs,
                    self.tp_group,
                    ref_hidden=ref_hidden,
                    ref_weight_shard=(weight if ref_weight is None else ref_weight) if has_ref else None,
                    bias_shard=bias,
                    ref_bias_shard=ref_bias if has_ref else None,
                    **kw,
                )
            logps = vocab_parallel_seq_logps(
                hidden, weight, vocab_start, labels, seq_index, num_seqs, self.tp_group, bias_shard=bias, **kw
            )
            ref = None
            if ref_hidden is not None:
                with torch.no_grad():
                    ref = vocab_parallel_seq_logps(
                        ref_hidden,
                        weight if ref_weight is None else ref_weight,
                        vocab_start,
                        labels,
                        seq_index,
                        num_seqs,
                        self.tp_group,
                        bias_shard=bias if ref_bias is None else ref_bias,
                        **kw,
                    )
            return logps, ref
        if ref_hidden is not None and ref_weight is None:
            ref_weight = weight
        return seq_logps(
            hidden,
            weight,
            labels,
            seq_index,
            num_seqs,
            ref_hidden=ref_hidden,
            ref_weight=ref_weight,
            bias=bias,
            ref_bias=ref_bias,
            scale=head.scale,
            softcap=head.softcap,
            ignore_index=ignore_index,
        )

    def _prepare_output_weight(self, weight: nn.Parameter) -> Callable[[], None] | None:
        """Make the full parameter available to the kernel; returns how to release it (None: nothing to release)."""
        return None

    def _run_releases(self) -> None:
        while self._release_after_backward:
            self._release_after_backward.pop()()

    def _vocab_start(self, shard: Tensor) -> int:
        """First vocabulary row of this rank's shard: shard rows of lower TP ranks, summed (computed once)."""
        if getattr(self, "_cached_vocab_start", None) is None:
            rows = torch.tensor([shard.shape[0]], dtype=torch.long, device=shard.device)
            everyone = [torch.zeros_like(rows) for _ in range(self.tp_size)]
            dist.all_gather(everyone, rows, group=self.tp_group)
            me = dist.get_rank(self.tp_group)
            self._cached_vocab_start = int(sum(int(r) for r in everyone[:me]))
        return self._cached_vocab_start

    def all_reduce_dp(self, t: Tensor) -> Tensor:
        """A new tensor: `t` summed over the data-parallel group (global statistics: whitening, normalization)."""
        out = t.detach().clone()
        if self.dp_group is not None and self.dp_world_size > 1:
            dist.all_reduce(out, group=self.dp_group)
        return out

    def all_gather_dp(self, t: Tensor) -> tuple[Tensor, list[int]]:
        """Every data-parallel rank's `t` concatenated along dim 0 in dp-rank order (lengths may differ; the
        other dims may not), and each rank's length."""
        if self.dp_group is None or self.dp_world_size == 1:
            return t.detach().clone(), [t.shape[0]]
        n = torch.tensor([t.shape[0]], dtype=torch.long, device=t.device)
        sizes = [torch.zeros_like(n) for _ in range(self.dp_world_size)]
        dist.all_gather(sizes, n, group=self.dp_group)
        lengths = [int(s) for s in sizes]
        padded = t.detach().new_zeros((max(lengths), *t.shape[1:]))
        padded[: t.shape[0]] = t.detach()
        parts = [torch.empty_like(padded) for _ in lengths]
        dist.all_gather(parts, padded, group=self.dp_group)
        return torch.cat([p[:k] for p, k in zip(parts, lengths)]), lengths

    def sum_over_dp(self, values: dict[str, float]) -> dict[str, float]:
        """Sum per-rank numbers (example counts per feedback type) over the data-parallel group."""
        if self.dp_group is None or self.dp_world_size == 1:
            return dict(values)
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self.device)  # NCCL: on device
        dist.all_reduce(t, group=self.dp_group)
        return {k: (int(v) if isinstance(values[k], int) else float(v)) for k, v in zip(keys, t.tolist())}
