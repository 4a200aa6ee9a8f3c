"""Reading tables: jsonl / json / parquet / csv files and `save_to_disk` directories -> `datasets.Dataset`.

    ds = load_table("data/train.jsonl")

All reading goes through `datasets` (`load_dataset` with a throw-away cache directory and `keep_in_memory=True`,
or `load_from_disk`), so nothing is written next to the data or into the user's HF cache. Columns whose values
have mixed JSON types load as datasets' `Json` feature, so a row with a wrong type reaches the validator instead of
failing the whole file.

Every failure is a `DataError` holding one or more `Problem`s, each printed as one line naming the file and, where
known, the row (1-based record number; for JSON Lines a bad line is named by its line number) and the field.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
from datasets import Dataset

# File suffix -> datasets packaged builder. JSON arrays and JSON Lines both use the json builder.
BUILDERS: dict[str, str] = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
MAX_REPORTED_LINES = 20
"""A file with many broken JSON lines is reported by its first lines only (plus a count)."""


@dataclass(frozen=True)
class Problem:
    """One data problem; `str(p)` is the one line users see, e.g.
    `data.jsonl:7: field 'score': 1.4 is outside [0, 1]`."""

    file: str
    row: int | None
    """1-based row (record) number, or None for whole-file problems (missing column, unreadable file)."""
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.row is None else f"{self.file}:{self.row}"
        return f"{where}: field '{self.field}': {self.message}" if self.field else f"{where}: {self.message}"


class DataError(ValueError):
    """Bad or unreadable data. `problems` holds every line; `str(err)` is the first one (plus a count)."""

    def __init__(self, problems: list[Problem]):
        if not problems:
            raise ValueError("DataError needs at least one problem")
        self.problems = list(problems)
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        super().__init__(f"{problems[0]}{more}")

    @staticmethod
    def one(file: str, message: str, row: int | None = None, field: str | None = None) -> DataError:
        return DataError([Problem(file, row, field, message)])


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Silence datasets' progress bars and its error log (our DataError says it in one line) while reading;
    the previous settings are restored afterwards."""
    was_disabled = datasets.are_progress_bars_disabled()
    verbosity = datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        if not was_disabled:
            datasets.enable_progress_bars()


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:200]


def _diagnose_json_lines(path: Path, name: str) -> list[Problem]:
    """Find the lines datasets could not parse: invalid JSON, or a value that is not an object."""
    problems: list[Problem] = []
    count = 0
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as e:
                msg = f"invalid JSON ({e.msg} at column {e.colno})"
            else:
                if isinstance(value, dict):
                    continue
                msg = f"expected a JSON object per line, got {type(value).__name__}"
            count += 1
            if len(problems) < MAX_REPORTED_LINES:
                problems.append(Problem(name, lineno, None, msg))
    if count > len(problems):
        problems.append(Problem(name, None, None, f"{count - len(problems)} more invalid lines not shown"))
    return problems


def _diagnose_json_document(path: Path, name: str) -> list[Problem]:
    try:
        value = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as e:
        return [Problem(name, None, None, f"invalid JSON at line {e.lineno} column {e.colno} ({e.msg})")]
    if isinstance(value, list):
        for i, item in enumerate(value, start=1):
            if not isinstance(item, dict):
                return [Problem(name, i, None, f"expected a JSON object per record, got {type(item).__name__}")]
    elif not isinstance(value, dict):
        return [Problem(name, None, None, f"expected a JSON array of objects, got {type(value).__name__}")]
    return []


def _looks_like_json_lines(path: Path) -> bool:
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.strip():
                return not line.lstrip().startswith("[")
    return True


def _is_blank(path: Path) -> bool:
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 16):
            if chunk.strip():
                return False
    return True


def _read_json_rows(path: Path) -> list[Any] | None:
    if _looks_like_json_lines(path):
        with path.open("r", encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    value = json.loads(path.read_text(encoding="utf-8"))
    return value if isinstance(value, list) else None


def _exact_json_columns(ds: Dataset, path: Path) -> Dataset:
    """Replace lossy mixed-type (`Json`) columns by their exact values, JSON-encoded (see the module docstring)."""
    cols = [c for c, f in ds.features.items() if isinstance(f, datasets.Json)]
    if not cols:
        return ds
    try:
        rows = _read_json_rows(path)
    except (ValueError, UnicodeDecodeError):  # not the shape we can align; keep datasets' reading
        return ds
    if rows is None or len(rows) != len(ds) or not all(isinstance(r, dict) for r in rows):
        return ds
    table = ds.data.table
    for c in cols:
        i = table.column_names.index(c)
        values = [None if r.get(c) is None else json.dumps(r[c]) for r in rows]
        table = table.set_column(i, table.schema.field(i), pa.array(values, type=pa.json_()))
    return Dataset(table, info=ds.info)


def _load(builder: str, path: Path, **kwargs: Any) -> Dataset:
    with tempfile.TemporaryDirectory(prefix="una-hpc-load-") as cache:
        return datasets.load_dataset(
            builder, data_files=str(path), split="train", cache_dir=cache, keep_in_memory=True, **kwargs
        )


def _read(builder: str, path: Path) -> Dataset:
    ds = _load(builder, path)
    if builder == "csv" and any(f != datasets.Value("string") for f in ds.features.values()):
        ds = _load(builder, path, features=datasets.Features({c: datasets.Value("string") for c in ds.column_names}))
    return _exact_json_columns(ds, path) if builder == "json" else ds


def _load_file(path: Path, name: str) -> Dataset:
    builder = BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise DataError.one(
            name,
            f"unsupported file type {path.suffix or '(none)'!r}; use {', '.join(BUILDERS)} or a save_to_disk directory",
        )
    try:
        if _is_blank(path):
            raise DataError.one(name, "file is empty (no rows)")
    except OSError as e:
        raise DataError.one(name, f"cannot read file ({e.strerror or _first_line(e)})") from None
    with _quiet_datasets():
        try:
            return _read(builder, path)
        except Exception as e:  # noqa: BLE001 - every reader failure becomes a one-line DataError below
            cause = e
    problems: list[Problem] = []
    if builder == "json":
        problems = (
            _diagnose_json_lines(path, name) if _looks_like_json_lines(path) else _diagnose_json_document(path, name)
        )
    if not problems:
        detail = _first_line(cause.__cause__ or cause) if cause.__cause__ or str(cause).strip() else ""
        problems = [Problem(name, None, None, f"cannot read {builder} file ({detail or type(cause).__name__})")]
    raise DataError(problems)


def _load_dir(path: Path, name: str, split: str) -> Dataset:
    """A `save_to_disk` dir (Dataset or DatasetDict), else a dir of data files with datasets' split naming
    (`train.jsonl`, `data/train_prefs-00000-of-00001.parquet`, ...), as a Hub dataset repo holds them."""
    if not any((path / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
        return _load_data_files_dir(path, name, split)
    with _quiet_datasets():
        try:
            loaded = datasets.load_from_disk(str(path), keep_in_memory=True)
        except Exception as e:  # noqa: BLE001
            raise DataError.one(name, f"cannot read save_to_disk directory ({_first_line(e)})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError.one(name, f"no split '{split}' (splits: {', '.join(loaded)}); set data.split")
        loaded = loaded[split]
    return loaded


def _load_data_files_dir(path: Path, name: str, split: str) -> Dataset:
    if not any(p.suffix in BUILDERS for p in path.rglob("*") if p.is_file()):
        raise DataError.one(name, "directory holds no save_to_disk dataset and no jsonl/json/parquet/csv file")
    with _quiet_datasets(), tempfile.TemporaryDirectory() as cache:
        try:
            loaded = datasets.load_dataset(str(path), cache_dir=cache, keep_in_memory=True)
        except Exception as e:  # noqa: BLE001
            raise DataError.one(name, f"cannot read data files directory ({_first_line(e)})") from None
    if split not in loaded:
        raise DataError.one(name, f"no split '{split}' (splits: {', '.join(loaded)}); set data.split")
    return loaded[split]


def load_table(path: str | os.PathLike, split: str = "train") -> Dataset:
    """Read a data file or a directory (save_to_disk, or data files named by split); raise DataError (one line
    per problem) when it can't. `split` picks the split of a directory; a single file is one split."""
    name = str(path)
    p = Path(path)
    if not p.exists():
        raise DataError.one(name, "file not found")
    if p.is_dir():
        return _load_dir(p, name, split)
    if not os.access(p, os.R_OK):
        raise DataError.one(name, "cannot read file (permission denied)")
    return _load_file(p, name)
