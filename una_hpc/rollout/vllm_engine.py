"""vLLM colocated in the training process, with in-process weight sync (no files, no engine restart).

    engine = VLLMEngine(model_dir, max_model_len=256, gpu_memory_utilization=0.3, seed=0)
    engine.sync_weights(policy_weights_for_sync(policy))     # reload_weights + reset_prefix_cache, ~10 ms tiny model
    rollouts = engine.generate([[1, 5, 6]], n=4, params=SamplingSettings(seed=0))

- Prompts go in as token ids (TokensPrompt), samples come back as token ids with the sampled tokens' logprobs
  (`SamplingParams(logprobs=0)`, `logprobs_mode="raw_logprobs"`: log-softmax of the raw logits, i.e. the policy's
  log-probability whatever the temperature/top-p/top-k, the quantity the trainer computes). No detokenization,
  except with stop strings: vLLM stops on its detokenized text, and `stops.stop_cut` (the HF engine's rule, with
  the model dir's tokenizer) then decides where the completion ends.
- `sync_weights` streams (HF name, tensor) pairs into `collective_rpc("reload_weights")`: the worker lives in this
  process, so it receives the trainer's tensors by reference and copies them into its own (fused) parameters. Then
  the prefix cache is reset (cached KV blocks were computed with the old weights). The time is logged and kept in
  `engine.sync_stats`. A name the engine's checkpoint does not have, or a checkpoint weight that was not sent,
  raises WeightSyncError; a failed sync leaves vLLM's model half-reloaded, so the engine refuses further use.
- In-process engine: vLLM reads VLLM_ENABLE_V1_MULTIPROCESSING only from the process environment (there is no
  constructor argument). It is set to 0 while the engine is built, because the colocated weight sync needs the
  worker in this process and a multiprocessing engine would spawn a second process that re-imports the training
  script; the engine core caches vLLM's environment when it starts, so the variable is removed again afterwards.
  A value the user set is respected, never overwritten; with 1 the engine generates but `sync_weights` refuses
  (one-line WeightSyncError): vLLM's RPC to an engine process does not carry (name, tensor) pairs (measured).
- Engine creation seeds torch/numpy/random globally inside vLLM; the trainer's random state is restored afterwards.
  Also in-process, vLLM's CPU worker replaces `torch.set_num_threads` with a no-op that warns (it binds its OpenMP
  threads to cores): set the thread count before the engine starts (OMP_NUM_THREADS), not after.

- Logs: vLLM's own logger writes to `log_file` (rollout.engine_log_level; the harness passes
  OUTPUT_DIR/vllm.log, one file per rank) and the console keeps only warnings and errors, without the known
  start-up chatter and the "RotaryEmbedding: Failed to load weights" line each reload prints (a layer with no
  weights; harmless). A colocated engine inside a launched job shares the trainer's default process group;
  `close()` keeps that group alive (vLLM's shutdown would destroy it under the trainer).
- Sleep mode (CUDA only, `sleep_level` 1 or 2): `sleep()` releases the KV cache (and offloads or drops the
  weights) while the trainer runs, `wake_up()` brings them back before the next sync and generation.

Tested by: .venv/bin/python -m pytest tests/integration/test_vllm_sync.py tests/distributed/test_online_dp.py -q
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import logging
import os
import random
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import (
    EngineStartError,
    Rollout,
    SamplingSettings,
    SyncStats,
    VLLMNotInstalledError,
    WeightSyncError,
    check_prompts,
)
from .stops import stop_cut
from .vllm_host import keep_default_process_group, quiet_vllm, resolve_sleep_level, route_vllm_logs

log = logging.getLogger(__name__)

VLLM_HINT = (
    "vLLM is not installed; set rollout.engine=hf (or rollout.allow_hf_fallback=true) to sample with HF "
    "generate, or install it: pip install 'una-hpc[rollout]' (CUDA) / 'una-hpc[rollout-cpu]' (CPU)"
)
MP_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"


def module_available(name: str) -> bool:
    """True when `import name` can find the module (checked with importlib, nothing is imported)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package missing, or sys.modules[name] set without a spec
        return False


def require_vllm(module: str = "vllm") -> None:
    if not module_available(module):
        raise VLLMNotInstalledError(VLLM_HINT)


def one_line(exc: BaseException, limit: int = 400) -> str:
    """`Type: message` with all whitespace collapsed, cut to `limit` characters."""
    text = " ".join(str(exc).split()) or "(no message)"
    text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def _in_process_engine_env() -> Iterator[None]:
    """MP_ENV=0 while vLLM builds its engine, unless the user set it (see the module docstring)."""
    if MP_ENV in os.environ:
        yield
        return
    os.environ[MP_ENV] = "0"
    try:
        yield
    finally:
        os.environ.pop(MP_ENV, None)


@contextlib.contextmanager
def _preserve_rng() -> Iterator[None]:
    """vLLM seeds the global torch/numpy/random generators at start-up; put the trainer's states back."""
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def checkpoint_names(model_dir: Path) -> set[str] | None:
    """Weight names stored in the dir's safetensors files (None when it holds none: no name check)."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        return set(json.loads(index.read_text())["weight_map"])
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    from safetensors import safe_open

    names: set[str] = set()
    for f in files:
        with safe_open(str(f), framework="pt") as handle:
            names.update(handle.keys())
    return names


class VLLMEngine:
    """`RolloutEngine` on a colocated, in-process `vllm.LLM`."""

    name = "vllm"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        max_model_len: int,
        gpu_memory_utilization: float = 0.3,
        seed: int = 0,
        dtype: str = "float32",
        enforce_eager: bool = True,
        engine_args: dict[str, Any] | None = None,
        log_file: str | Path | None = None,
        log_level: str = "INFO",
        sleep_level: int = 0,
    ) -> None:
        require_vllm()
        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise EngineStartError(f"vLLM engine: {path} is not an HF model directory (no config.json)")
        self.model_dir = path
        self.max_model_len = max_model_len
        self.sync_stats = SyncStats()
        self._expected = checkpoint_names(path)
        self._unusable: str | None = None
        t0 = time.perf_counter()
        route_vllm_logs(log_file, log_level)
        with quiet_vllm(log_file is not None):
            from vllm import LLM

        if log_file is not None:  # keep the engine from re-applying vLLM's console logging config at start-up
            from vllm.config import LoggingConfig

            quiet = {"logging_config": LoggingConfig(configure_logging=False), "use_tqdm_on_load": False}
            engine_args = {**quiet, **(engine_args or {})}
        self.sleep_level = resolve_sleep_level(sleep_level, torch.cuda.is_available())
        """vLLM sleep level used between generations (0: never sleeps; sleep mode needs CUDA)."""
        self._asleep = False
        if self.sleep_level:
            engine_args = {**(engine_args or {}), "enable_sleep_mode": True}
        self.import_seconds = time.perf_counter() - t0
        """Seconds spent importing vLLM (first engine of the process only)."""
        t0 = time.perf_counter()
        try:
            with _in_process_engine_env(), _preserve_rng(), quiet_vllm(log_file is not None):
                self._llm = LLM(
                    model=str(path),
                    dtype=dtype,
                    enforce_eager=enforce_eager,
                    seed=seed,
                    gpu_memory_utilization=gpu_memory_utilization,
                    max_model_len=max_model_len,
                    logprobs_mode="raw_logprobs",
                    **(engine_args or {}),
                )
        except Exception as e:  # vLLM raises many types (ValueError, pydantic ValidationError, RuntimeError...)
            raise EngineStartError(f"vLLM engine failed to start for {path}: {one_line(e)}") from e
        self.start_seconds = time.perf_counter() - t0
        """Seconds `vllm.LLM(...)` took (model load, KV cache, warm-up), without the import."""
        self._in_process = type(self._llm.llm_engine.engine_core).__name__ == "InprocClient"
        log.info(
            "vLLM engine started in %.1f s (+%.1f s import; %s, in-process=%s)",
            self.start_seconds,
            self.import_seconds,
            path,
            self._in_process,
        )
        if not self._in_process:
            log.warning(
                "%s=%s is set: the vLLM engine runs in its own process and cannot take in-process weight syncs",
                MP_ENV,
                os.environ.get(MP_ENV),
            )

    # -- generation ---------------------------------------------------------------------------------------------
    def generate(self, prompt_ids: list[list[int]], n: int, params: SamplingSettings) -> list[Rollout]:
        self._check_usable()
        check_prompts(prompt_ids, n, self.max_model_len)
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        sampling = [
            SamplingParams(
                n=n,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.k,
                stop=list(params.stop) or None,
                logprobs=0,
                detokenize=bool(params.stop),  # vLLM matches stop strings on its detokenized text
                max_tokens=min(params.max_new_tokens, self.max_model_len - len(ids)),
                seed=None if params.seed is None else params.seed + i * n,
            )
            for i, ids in enumerate(prompt_ids)
        ]
        outputs = self._llm.generate(
            [TokensPrompt(prompt_token_ids=list(ids)) for ids in prompt_ids], sampling, use_tqdm=False
        )
        rollouts = []
        for i, (ids, out) in enumerate(zip(prompt_ids, outputs)):
            for c in sorted(out.outputs, key=lambda c: c.index):
                if c.finish_reason not in ("stop", "length"):
                    raise RuntimeError(f"vLLM request for prompt {i} ended with {c.finish_reason!r}")
                tokens = list(c.token_ids)
                logprobs = [step[tok].logprob for step, tok in zip(c.logprobs, tokens)]
                finish = c.finish_reason
                cut = stop_cut(self.stop_tokenizer, params.stop, ids, tokens) if params.stop else None
                if cut is not None:  # the rule the HF engine applies too (stops.py), whatever vLLM cut
                    tokens, logprobs, finish = tokens[:cut], logprobs[:cut], "stop"
                rollouts.append(Rollout(i, c.index, list(ids), tokens, logprobs, finish))
        return rollouts

    @functools.cached_property
    def stop_tokenizer(self):
        """The tokenizer of the model dir (what the HF engine decodes with), loaded on the first stop string."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.model_dir))

    # -- weight sync --------------------------------------------------------------------------------------------
    def sync_weights(self, named_tensors: Iterable[tuple[str, Tensor]]) -> None:
        self._check_usable()
        if not self._in_process:
            raise WeightSyncError(
                f"in-process weight sync needs the in-process vLLM engine, but {MP_ENV}="
                f"{os.environ.get(MP_ENV)!r} is set: unset it or set it to 0"
            )
        sent: set[str] = set()
        nbytes = 0

        def checked() -> Iterator[tuple[str, Tensor]]:
            nonlocal nbytes
            for name, tensor in named_tensors:
                if self._expected is not None and name not in self._expected:
                    raise WeightSyncError(
                        f"weight {name!r} is not in the engine's checkpoint {self.model_dir} "
                        f"(expected HF names of the plain model)"
                    )
                sent.add(name)
                nbytes += tensor.numel() * tensor.element_size()
                yield name, tensor

        t0 = time.perf_counter()
        try:
            self._llm.collective_rpc("reload_weights", kwargs={"weights_iterator": checked()})
            self._llm.reset_prefix_cache()
        except Exception as e:
            self._unusable = "a weight sync failed"
            if isinstance(e, WeightSyncError):
                raise
            raise WeightSyncError(f"vLLM weight sync failed: {one_line(e)}; recreate the engine") from e
        seconds = time.perf_counter() - t0
        missing = (self._expected or set()) - sent
        if missing:
            self._unusable = "a weight sync left weights stale"
            raise WeightSyncError(
                f"weight sync sent {len(sent)} tensors but the checkpoint has {len(missing)} more "
                f"(e.g. {sorted(missing)[0]!r}): the engine would sample from stale weights"
            )
        self.sync_stats.tensors, self.sync_stats.bytes, self.sync_stats.seconds = len(sent), nbytes, seconds
        self.sync_stats.history.append(seconds)
        log.info("vLLM weight sync: %d tensors, %.1f MB in %.1f ms", len(sent), nbytes / 2**20, seconds * 1e3)

    # -- sleep mode (CUDA) ---------------------------------------------------------------------------------------
    def sleep(self) -> None:
        """Release the KV cache (level 1: weights offloaded to host; 2: dropped) while the trainer runs."""
        if self.sleep_level and not self._asleep:
            self._llm.sleep(level=self.sleep_level)
            self._asleep = True

    def wake_up(self) -> None:
        """Bring weights and KV cache back (before a sync: level 2 dropped the weights, the sync refills them)."""
        if self._asleep:
            self._llm.wake_up()
            self._asleep = False

    # -- lifetime -----------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._unusable == "closed":
            return
        self._unusable = "closed"
        llm, self._llm = self._llm, None
        with keep_default_process_group():
            llm.llm_engine.engine_core.shutdown()
        del llm

    def __enter__(self) -> VLLMEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def in_process(self) -> bool:
        """True when vLLM's engine core runs in this process (required by sync_weights)."""
        return self._in_process

    @property
    def unusable_reason(self) -> str | None:
        """Why the engine refuses work (closed, a failed sync), or None while it is usable."""
        return self._unusable

    def _check_usable(self) -> None:
        if self._unusable is not None:
            raise RuntimeError(f"vLLM engine for {self.model_dir} is unusable: {self._unusable}")
