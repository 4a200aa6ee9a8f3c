"""The fallback engine: HF `generate` on the training policy itself.

    engine = HFEngine(policy, eos_token_ids=[tok.eos_token_id], pad_token_id=tok.pad_token_id)
    rollouts = engine.generate([[1, 5, 6]], n=4, params=SamplingSettings(seed=0))

- `sync_weights` is a no-op: the engine samples from the policy module the trainer updates, so it always sees the
  current weights (the iterator is not even consumed).
- Prompts are left-padded into one batch (HF derives position ids from the attention mask, so padding does not
  change a prompt's logits) and sampled `n` times each (`num_return_sequences`).
- Logprobs: HF's `output_logits` are the raw logits, before temperature / top-p processing. The returned logprob of
  a sampled token is log_softmax(raw logits)[token]: the policy's own log-probability at temperature 1, the same
  quantity vLLM returns with `logprobs_mode="raw_logprobs"` and the trainer's seq_logps computes. (Sampling itself
  uses the temperature / top-p distribution.)
- The sampling configuration is built fresh from SamplingSettings (top_k off unless `params.top_k` sets it), so a
  model's generation_config defaults (top_k=50, repetition penalties...) do not leak in and both engines sample the
  same way.
- The policy is put in eval mode for generation (no dropout) and restored; a given seed is applied inside
  `torch.random.fork_rng`, so the trainer's random state is untouched.
- A completion ends at its first EOS token (kept, finish reason "stop"); the tokens after it are padding.
- Stop strings (`params.stop`, decoded with `tokenizer`): a stopping criterion ends a row once its text holds one,
  and `stops.stop_cut` then cuts the completion after the completing token (finish reason "stop"), the same rule
  the vLLM engine applies.

Tested by: .venv/bin/python -m pytest tests/unit/test_rollout_hf.py -q
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn
from transformers import StoppingCriteria, StoppingCriteriaList

from .base import Rollout, SamplingSettings, check_prompts
from .stops import StopScanner, stop_cut


def _unwrap_module(model: nn.Module) -> nn.Module:
    """DeepSpeed / DDP keep the model in `.module`; a PeftModel is kept (its generate applies the adapter)."""
    while not hasattr(model, "generate") and isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    return model


class _StopCriteria(StoppingCriteria):
    """Ends a row once its text contains a stop string (saves compute only: `stop_cut` decides where the
    completion ends, afterwards, by the same rule). One StopScanner per row, fed each new token once."""

    def __init__(self, tokenizer, stops, row_prompts: list[list[int]], width: int) -> None:
        self.scanners = [StopScanner(tokenizer, stops, p) for p in row_prompts]
        self.width = width
        self.fed = 0

    def __call__(self, input_ids: Tensor, scores: Tensor, **kwargs) -> Tensor:
        new = input_ids[:, self.width + self.fed :].tolist()
        self.fed += len(new[0])
        done = [any([s.step(t) for t in row]) for s, row in zip(self.scanners, new)]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class HFEngine:
    """`RolloutEngine` running HF generate on the live policy."""

    name = "hf"

    def __init__(
        self,
        model: nn.Module,
        *,
        eos_token_ids: Sequence[int],
        pad_token_id: int,
        max_length: int | None = None,
        batch_size: int = 64,
        tokenizer=None,
    ) -> None:
        if not eos_token_ids:
            raise ValueError("HFEngine needs at least one EOS token id")
        self.model = _unwrap_module(model)
        self.eos_token_ids = [int(t) for t in eos_token_ids]
        self.pad_token_id = int(pad_token_id)
        self.max_length = max_length
        self.batch_size = batch_size
        """Prompts per generate call (each expands to n sequences)."""
        self.tokenizer = tokenizer
        """The policy's tokenizer: stop strings are matched on its decoded text (None: no stop strings)."""

    def generate(self, prompt_ids: list[list[int]], n: int, params: SamplingSettings) -> list[Rollout]:
        check_prompts(prompt_ids, n, self.max_length)
        if params.stop and self.tokenizer is None:
            raise ValueError("HFEngine: stop strings need the policy's tokenizer (HFEngine(..., tokenizer=...))")
        with self._sampling_state(params.seed):
            rollouts: list[Rollout] = []
            for start in range(0, len(prompt_ids), self.batch_size):
                chunk = prompt_ids[start : start + self.batch_size]
                rollouts += self._generate_chunk(chunk, start, n, params)
        return rollouts

    @torch.no_grad()
    def _generate_chunk(self, prompts: list[list[int]], offset: int, n: int, params: SamplingSettings) -> list[Rollout]:
        from transformers import GenerationConfig

        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for i, p in enumerate(prompts):  # left padding: every prompt ends where generation starts
            input_ids[i, width - len(p) :] = torch.tensor(p)
            attention_mask[i, width - len(p) :] = 1
        max_new = params.max_new_tokens
        if self.max_length is not None:
            max_new = min(max_new, self.max_length - width)
        sampling = (
            dict(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=params.k)
            if not params.greedy
            else dict(do_sample=False, top_k=0)
        )
        gen_cfg = GenerationConfig(
            **sampling,
            max_new_tokens=max_new,
            num_return_sequences=n,
            eos_token_id=self.eos_token_ids,
            pad_token_id=self.pad_token_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
        rows = [prompts[row // n] for row in range(len(prompts) * n)]  # generate repeats each prompt n times
        stopping = [_StopCriteria(self.tokenizer, params.stop, rows, width)] if params.stop else []
        out = self.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            generation_config=gen_cfg,
            stopping_criteria=StoppingCriteriaList(stopping),
        )
        completions = out.sequences[:, width:]
        # out.logits: one [B*n, V] tensor of raw (unprocessed) logits per step; gather step by step (no [B, T, V])
        logprobs = torch.stack(
            [
                torch.log_softmax(step.float(), dim=-1).gather(-1, completions[:, t : t + 1])[:, 0]
                for t, step in enumerate(out.logits)
            ],
            dim=1,
        ).cpu()
        completions = completions.cpu()
        eos = torch.tensor(self.eos_token_ids)
        rollouts = []
        for row in range(completions.shape[0]):
            i, j = divmod(row, n)  # generate repeats each prompt n times, consecutively
            tokens = completions[row]
            hits = torch.isin(tokens, eos).nonzero()
            length = int(hits[0]) + 1 if len(hits) else tokens.shape[0]
            cut = stop_cut(self.tokenizer, params.stop, prompts[i], tokens[:length].tolist())
            finished = bool(len(hits)) or cut is not None
            length = cut or length
            rollouts.append(
                Rollout(
                    offset + i,
                    j,
                    list(prompts[i]),
                    tokens[:length].tolist(),
                    logprobs[row, :length].tolist(),
                    "stop" if finished else "length",
                )
            )
        return rollouts

    @contextlib.contextmanager
    def _sampling_state(self, seed: int | None) -> Iterator[None]:
        was_training = self.model.training
        self.model.eval()
        try:
            if seed is None:
                yield
            else:
                device = next(self.model.parameters()).device
                devices = [device.index or 0] if device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(seed)
                    yield
        finally:
            self.model.train(was_training)

    def sync_weights(self, named_tensors: Iterable[tuple[str, Tensor]]) -> None:
        """No-op: this engine samples from the live policy module, which already holds the trained weights."""

    def close(self) -> None:
        """Nothing to release: the model belongs to the trainer."""
