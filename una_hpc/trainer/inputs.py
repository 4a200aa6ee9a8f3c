"""What a run trains on: the model dir and the dataset, validated and tokenized before anything is written.

    .venv/bin/python -m pytest tests/integration/test_user_runs.py tests/unit/test_data_convert.py -q

model.path and data.path are used as given; the entry points fill them for the embedded default task beforehand
(una_hpc.task.defaults.fill_defaults), so an empty model.path here is a one-line ConfigError, never a build.
The feedback view the data is converted to is the loss head's (`resolve_view`). Invalid data raises DataError
carrying every problem line, before the output dir, a checkpoint or a reference-logp cache exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Config, ConfigError
from ..data.convert import to_examples
from ..data.io import DataError, load_table
from ..data.tokenize import TokenizedExample, tokenize_examples
from ..data.validate import validate
from ..hub import local_dir
from ..losses import get_head


@dataclass
class RunInputs:
    model_path: Path
    data_path: Path | None
    data_format: str
    eval_path: Path | None
    eval_split: str = "train"
    """The split of eval_path to read when it is a dir of splits or a DatasetDict (data.eval_split)."""


def resolve_inputs(cfg: Config, *, need_data: bool = True) -> RunInputs:
    """The run's model dir and data; `need_data=False` (eval) skips data.path and its check."""
    model, data, fmt, eval_path = cfg.model.path, cfg.data.path, cfg.data.format, cfg.data.eval_path
    if not model:
        raise ConfigError(
            "model.path is empty: give an HF model dir or Hub id, or call "
            "una_hpc.task.defaults.fill_defaults(cfg) first (as `una-hpc` does) for the embedded task"
        )
    if not data and need_data:  # never the embedded toy task for a model the user named
        raise ConfigError(
            f"model.path={model} is set but data.path is empty: give your dataset with data.path "
            "(the embedded default task is only for the embedded default model)"
        )
    model = local_dir(model, setting="model.path")
    if not (model / "config.json").is_file():
        raise ConfigError(f"model.path {model}: not an HF model directory (no config.json)")
    if data:
        data = local_dir(data, setting="data.path", repo_type="dataset")
        if not data.exists():
            raise ConfigError(f"data.path {data}: no such file or directory")
    eval_split = cfg.data.eval_split or "train"
    if not eval_path and cfg.data.eval_split and data:  # the held-out split of the training dataset itself
        eval_path = data
    return RunInputs(Path(model), Path(data) if data else None, fmt, Path(eval_path) if eval_path else None, eval_split)


def resolve_view(view: str, loss_name: str) -> str:
    """data.view, with "auto" replaced by the view the loss head consumes (LossHead.view)."""
    return get_head(loss_name).view if view == "auto" else view


def check_batching(cfg: Config, dp_world_size: int) -> None:
    """Every data-parallel rank must run the same number of micro-batches (collectives pair up per backward)."""
    b, m = cfg.trainer.batch_size, cfg.trainer.micro_batch_size
    if b < 1 or m < 0:
        raise ConfigError(f"trainer.batch_size must be >= 1 and trainer.micro_batch_size >= 0, got {b}, {m}")
    if b % dp_world_size:  # equal shares => every rank runs ceil(share / m) micro-batches
        raise ConfigError(f"trainer.batch_size={b} must be a multiple of the {dp_world_size} data-parallel ranks")


def load_training_data(cfg: Config, inputs: RunInputs, tokenizer) -> list[TokenizedExample]:
    """Load, validate (all problems at once), convert to the loss's feedback view, tokenize."""
    source = str(inputs.data_path)
    table = load_table(inputs.data_path, split=cfg.data.split)
    problems = validate(
        table,
        inputs.data_format,
        source,
        tokenizer=tokenizer,
        max_prompt_length=cfg.data.max_prompt_length,
        truncation=cfg.data.truncation,
        max_length=cfg.trainer.max_length,
        attribute_weights=cfg.data.attribute_weights,
    )
    if problems:
        raise DataError(problems)
    view = resolve_view(cfg.data.view, cfg.loss.name)
    examples = to_examples(table, inputs.data_format, view, cfg.data, source)
    if not examples:
        raise DataError.one(source, f"no training example of the '{view}' view could be derived")
    return tokenize_examples(
        examples,
        tokenizer,
        max_length=cfg.trainer.max_length,
        max_prompt_length=cfg.data.max_prompt_length,
        truncation=cfg.data.truncation,
        source=source,
    )
