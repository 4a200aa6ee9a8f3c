"""Hub ids beside local paths: `model.path`, `model.ref_path`, `rollout.reward_model` and `data.path` accept both.

    local_dir("HuggingFaceTB/SmolLM2-135M-Instruct")            # -> the cached snapshot dir (downloads if online)
    local_dir("acme/prefs", repo_type="dataset")                 # datasets' repos the same way
    local_dir("runs/default/base")                               # an existing local path is returned as it is

Resolution is huggingface_hub's own `snapshot_download`: it honours HF_HOME / HF_HUB_CACHE, HF_TOKEN and
HF_HUB_OFFLINE=1 (then only the local cache is read), exactly as transformers and datasets do. Models fetch only what
loading needs (configs, tokenizer files, safetensors; `.bin` weights only when a repo has no safetensors), never
remote code. Anything that fails is one line naming the setting and the id.
"""

from __future__ import annotations

from pathlib import Path

from .config import ConfigError

MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.jinja"]
LEGACY_WEIGHTS = ["*.json", "pytorch_model*.bin", "*.model", "*.txt", "*.tiktoken", "*.jinja"]


class HubError(ConfigError):
    """A name that is neither a local path nor a Hub id that can be resolved (one line)."""


def looks_like_hub_id(name: str) -> bool:
    """`org/name` or `name`: no leading '/', '.', '~', at most one '/', and no file suffix a local file would have."""
    if not name or name[0] in "/.~" or name.count("/") > 1 or "\\" in name:
        return False
    return not name.endswith((".jsonl", ".json", ".parquet", ".csv", ".yaml"))


def local_dir(name: str, *, setting: str = "model.path", repo_type: str = "model") -> Path:
    """The local directory behind `name`: the path itself when it exists, else the Hub snapshot of that id."""
    path = Path(name).expanduser()
    if path.exists() or not looks_like_hub_id(name):
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    patterns = MODEL_FILES if repo_type == "model" else None
    try:
        snap = Path(snapshot_download(repo_id=name, repo_type=repo_type, allow_patterns=patterns))
        if repo_type == "model" and not any(snap.glob("*.safetensors")):
            snap = Path(snapshot_download(repo_id=name, repo_type=repo_type, allow_patterns=LEGACY_WEIGHTS))
    except LocalEntryNotFoundError:
        raise HubError(
            f"{setting} {name}: no such local path, and the Hub id is not in the local cache "
            "(HF_HUB_OFFLINE is set or the Hub cannot be reached)"
        ) from None
    except HFValidationError:
        raise HubError(f"{setting} {name}: no such local path, and not a valid Hub id") from None
    except Exception as e:  # noqa: BLE001 - network, auth, missing repo: one line, whatever the cause
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HubError(f"{setting} {name}: no such local path, and the Hub id could not be fetched ({first})") from None
    return snap
