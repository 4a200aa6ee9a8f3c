"""Every format loads from jsonl, parquet, csv and a save_to_disk dir (where representable) and parses to the
records written; readers keep values exact; unreadable input is one-line DataError."""

from __future__ import annotations

import csv
import json
import math

import datasets
import pytest

from una_hpc.data import DataError, load_table, parse_table, validate
from una_hpc.data.formats import LABEL, PAIR, SCORE, TEXT

HS = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
W = {"helpfulness": 0.65, "correctness": 0.8, "coherence": 0.45}


def _hs_score(row):  # independent of una_hpc: weighted mean of attribute/4 over the paper's three weights
    return sum(W[k] * row[k] / 4 for k in W) / sum(W.values())


ROWS = {
    "pairwise": [
        {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"},
        {"prompt": "Name a color, please.", "chosen": "red", "rejected": "007"},
    ],
    "binary": [{"prompt": "p1", "completion": "yes", "label": 1}, {"prompt": "p1", "completion": "no", "label": 0}],
    "score": [{"prompt": "p1", "response": "a", "score": 0.25}, {"prompt": "p2", "response": "b", "score": 1.0}],
    "helpsteer2": [
        dict(prompt="p1", response="a", **dict(zip(HS, (4, 3, 2, 1, 0)))),
        dict(prompt="p1", response="b", **dict(zip(HS, (0, 1, 4, 4, 4)))),
    ],
    "text": [{"text": "the cat sat"}, {"text": "on the mat"}],
    "conversational": [
        {
            "prompt": [{"role": "user", "content": "hi"}],
            "chosen": [{"role": "assistant", "content": "hello"}],
            "rejected": [{"role": "assistant", "content": "bye"}],
        }
    ],
}
EXPECTED = {  # (kind, prompt, completions, value) per row, written independently of the parsers
    "pairwise": [(PAIR, "What is 2+2?", ("4", "5"), None), (PAIR, "Name a color, please.", ("red", "007"), None)],
    "binary": [(LABEL, "p1", ("yes",), 1.0), (LABEL, "p1", ("no",), 0.0)],
    "score": [(SCORE, "p1", ("a",), 0.25), (SCORE, "p2", ("b",), 1.0)],
    "helpsteer2": [
        (SCORE, "p1", ("a",), _hs_score(ROWS["helpsteer2"][0])),
        (SCORE, "p1", ("b",), _hs_score(ROWS["helpsteer2"][1])),
    ],
    "text": [(TEXT, "the cat sat", (), None), (TEXT, "on the mat", (), None)],
    "conversational": [(PAIR, [{"role": "user", "content": "hi"}], ("hello", "bye"), None)],
}


def _write(rows, storage, tmp_path):
    if storage == "jsonl":
        path = tmp_path / "data.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif storage == "json":
        path = tmp_path / "data.json"
        path.write_text(json.dumps(rows, indent=1))
    elif storage == "csv":
        path = tmp_path / "data.csv"
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    elif storage == "parquet":
        path = tmp_path / "data.parquet"
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    else:
        path = tmp_path / "data_dir"
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


CASES = [
    (f, s)
    for f in ROWS
    for s in ("jsonl", "json", "csv", "parquet", "disk")
    if not (s == "csv" and f == "conversational")
]  # message lists have no CSV form


@pytest.mark.parametrize("fmt,storage", CASES)
def test_each_format_loads_from_each_storage(fmt, storage, tmp_path):
    path = _write(ROWS[fmt], storage, tmp_path)
    ds = load_table(path)
    assert len(ds) == len(ROWS[fmt])
    assert validate(ds, fmt, str(path)) == []
    records, problems = parse_table(ds, fmt, str(path))
    assert problems == []
    assert [row for _, row in records] == list(range(1, len(ROWS[fmt]) + 1))
    for (rec, _), (kind, prompt, completions, value) in zip(records, EXPECTED[fmt]):
        assert (rec.kind, rec.prompt, rec.completions) == (kind, prompt, completions)
        assert math.isnan(rec.value) if value is None else rec.value == pytest.approx(value)


def test_score_format_with_attribute_columns_instead_of_score(tmp_path):
    rows = [{"prompt": "p", "response": "a", "helpfulness": 4, "correctness": 2, "coherence": 0}]
    path = _write(rows, "jsonl", tmp_path)
    ((rec, _),) = parse_table(load_table(path), "score", str(path))[0]
    assert rec.value == pytest.approx(_hs_score(rows[0]))
    weights = {"correctness": 1.0}
    ((rec, _),) = parse_table(load_table(path), "score", str(path), weights)[0]
    assert rec.value == pytest.approx(0.5)


def test_mixed_type_column_keeps_exact_values(tmp_path):
    # datasets' Json feature would read the string "4" as the number 4; the loader must keep it a string.
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "p", "chosen": "4", "rejected": "x"}\n{"prompt": "q", "chosen": 5, "rejected": "y"}\n')
    ds = load_table(path)
    assert ds.to_list()[0]["chosen"] == "4" and ds.to_list()[1]["chosen"] == 5
    assert [str(p) for p in validate(ds, "pairwise", "d.jsonl")] == [
        "d.jsonl:2: field 'chosen': expected a string, got number 5"
    ]


def test_csv_cells_stay_text(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,chosen,rejected\np,007,1.50\n")
    assert load_table(path).to_list() == [{"prompt": "p", "chosen": "007", "rejected": "1.50"}]


def test_save_to_disk_dataset_dict_uses_train_split(tmp_path):
    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS["score"]), "test": datasets.Dataset.from_list(ROWS["score"][:1])}
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    assert len(load_table(tmp_path / "dd")) == 2


@pytest.mark.parametrize(
    "content,expected",
    [
        (None, "missing.jsonl: file not found"),
        ("", "missing.jsonl: file is empty (no rows)"),
        ('{"a": 1}\n{"a": \n', "missing.jsonl:2: invalid JSON (Expecting value at column 7)"),
        ('{"a": 1}\n3\n', "missing.jsonl:2: expected a JSON object per line, got int"),
    ],
)
def test_unreadable_input_is_one_line(content, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if content is not None:
        (tmp_path / "missing.jsonl").write_text(content)
    with pytest.raises(DataError) as err:
        load_table("missing.jsonl")
    assert str(err.value) == expected and "\n" not in str(err.value)
    assert [str(p) for p in err.value.problems] == [expected]


def test_corrupt_parquet_is_one_line(tmp_path):
    path = tmp_path / "x.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError) as err:
        load_table(path)
    assert str(err.value).startswith(f"{path}: cannot read parquet file (") and "\n" not in str(err.value)
