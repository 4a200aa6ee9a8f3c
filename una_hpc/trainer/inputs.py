"""What a run trains on: the model dir and the dataset, validated and tokenized before anything is written.

With model.path and data.path set they are used as given; an empty one is filled from the embedded default task
(built on first use under task.dir, rank 0 only). Invalid data raises DataError carrying every problem line, before
the output dir, a checkpoint or a reference-logp cache exists.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Config, ConfigError
from ..data.convert import resolve_view, to_examples
from ..data.io import DataError, load_table
from ..data.tokenize import TokenizedExample, tokenize_examples
from ..data.validate import validate
from ..hub import local_dir


@dataclass
class RunInputs:
    model_path: Path
    data_path: Path | None
    data_format: str
    eval_path: Path | None


def resolve_inputs(cfg: Config, *, is_main: bool = True, barrier=lambda: None, need_data: bool = True) -> RunInputs:
    """The run's model dir and data; `need_data=False` (eval) skips data.path and its check."""
    model, data, fmt, eval_path = cfg.model.path, cfg.data.path, cfg.data.format, cfg.data.eval_path
    if model and not data and need_data:  # never the embedded toy task for a model the user named
        raise ConfigError(f"model.path={model} is set but data.path is empty: give your dataset with data.path "
                          "(the embedded default task is only for the embedded default model)")
    if not model:
        from .default_task import build_default_task  # only the embedded default needs it

        task = build_default_task(cfg.task, cfg.trainer.seed) if is_main else None
        barrier()
        if task is None:
            task = build_default_task(cfg.task, cfg.trainer.seed)  # cached: other ranks just read the paths
        model = model or str(task.model_dir)
        if not data:
            data, fmt = str(task.train_path), "helpsteer2"
            eval_path = eval_path or str(task.heldout_path)
    model = local_dir(model, setting="model.path")
    if not (model / "config.json").is_file():
        raise ConfigError(f"model.path {model}: not an HF model directory (no config.json)")
    if data:
        data = local_dir(data, setting="data.path", repo_type="dataset")
        if not data.exists():
            raise ConfigError(f"data.path {data}: no such file or directory")
    return RunInputs(Path(model), Path(data) if data else None, fmt,
                     Path(eval_path) if eval_path else None)


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
    problems = validate(table, inputs.data_format, source, tokenizer=tokenizer,
                        max_prompt_length=cfg.data.max_prompt_length, truncation=cfg.data.truncation,
                        max_length=cfg.trainer.max_length, attribute_weights=cfg.data.attribute_weights)
    if problems:
        raise DataError(problems)
    view = resolve_view(cfg.data.view, cfg.loss.name)
    examples = to_examples(table, inputs.data_format, view, cfg.data, source)
    if not examples:
        raise DataError.one(source, f"no training example of the '{view}' view could be derived")
    return tokenize_examples(examples, tokenizer, max_length=cfg.trainer.max_length,
                             max_prompt_length=cfg.data.max_prompt_length, truncation=cfg.data.truncation,
                             source=source)
