"""una_hpc.data: read tables, validate them, turn rows into feedback examples, tokenize, pack, cache ref logps.

    ds = load_validated(cfg.data, tokenizer=tok, max_length=cfg.trainer.max_length)      # DataError on bad data
    examples = to_examples(ds, cfg.data.format, view, cfg.data, cfg.data.path)    # view: the loss head's, given
    tokenized = tokenize_examples(examples, tok, max_length=cfg.trainer.max_length,
                                  max_prompt_length=cfg.data.max_prompt_length, truncation=cfg.data.truncation)
    batch = collate(tokenized[:8], tok.pad_token_id, row_length=cfg.trainer.max_length)

Modules: io (files -> datasets.Dataset, Problem, DataError), formats (registry of row formats), rows (typed
field access on one row), detect (data.format=auto: the TRL dataset type from columns and value shapes), scores
(score_chosen/score_rejected -> [0, 1]), helpsteer (0-4 attributes -> one score), validate, convert (views:
pairwise / binary / score / mixed, chosen by the caller: the trainer asks the loss head,
una_hpc.trainer.inputs.resolve_view), example (Example), tokenize, packing (pair-atomic first-fit-decreasing),
ref_cache, check (`una-hpc data check`). batch.py holds PackedBatch, the trainer's micro-batch. Per-sequence
targets (SeqTargets, IGNORE_INDEX) come from una_hpc.feedback: this package imports nothing from una_hpc.losses.
"""

from .batch import PackedBatch
from .check import run_data_check
from .convert import VIEWS, prompts_of, records_to_examples, to_examples
from .detect import Detected, detect_columns
from .example import Example
from .formats import FORMAT_NAMES, FORMATS, FormatSpec, Record, get_format
from .io import DataError, Problem, load_table
from .packing import collate, unpacked
from .ref_cache import RefLogpCache, dataset_fingerprint, model_fingerprint, split_by_example
from .tokenize import (
    TokenizedExample,
    TokenizeResult,
    encode_completions,
    encode_prompts,
    tokenize_data,
    tokenize_examples,
    tokenize_with_stats,
)
from .validate import ValidationReport, load_validated, parse_report, parse_table, validate, validate_report

__all__ = [
    "PackedBatch",
    "run_data_check",
    "VIEWS",
    "Example",
    "prompts_of",
    "records_to_examples",
    "to_examples",
    "Detected",
    "detect_columns",
    "FORMAT_NAMES",
    "FORMATS",
    "FormatSpec",
    "Record",
    "get_format",
    "DataError",
    "Problem",
    "load_table",
    "collate",
    "unpacked",
    "RefLogpCache",
    "dataset_fingerprint",
    "model_fingerprint",
    "split_by_example",
    "TokenizedExample",
    "TokenizeResult",
    "encode_completions",
    "encode_prompts",
    "tokenize_data",
    "tokenize_examples",
    "tokenize_with_stats",
    "ValidationReport",
    "load_validated",
    "parse_report",
    "parse_table",
    "validate",
    "validate_report",
]
