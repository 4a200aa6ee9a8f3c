"""`run_data_check` on the malformed-input corpus (tests/data/bad, expected lines in EXPECTED.tsv) and the good
corpus (tests/data/good): exact output lines, exit codes, nothing written; prompt-length policy in validation."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

import pytest

from una_hpc.config import DataConfig
from una_hpc.data import load_table, run_data_check, validate
from una_hpc.models.tiny import train_tokenizer

DATA = Path(__file__).resolve().parents[1] / "data"


def _expected(folder: Path) -> dict[tuple[str, str], list[str]]:
    cases: dict[tuple[str, str], list[str]] = defaultdict(list)
    for line in (folder / "EXPECTED.tsv").read_text().splitlines():
        if line and not line.startswith("#"):
            name, fmt, out = line.split("\t")
            cases[(name, fmt)].append(out)
    return dict(cases)


BAD = _expected(DATA / "bad")
GOOD = _expected(DATA / "good")


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


def test_bad_corpus_is_big_enough_and_complete():
    assert len(BAD) >= 15
    on_disk = {p.name for p in (DATA / "bad").iterdir() if p.name != "EXPECTED.tsv"}
    listed = {name for name, _ in BAD}
    assert on_disk <= listed  # every bad file has its expected output
    assert listed - on_disk == {"does_not_exist.jsonl"}


@pytest.mark.parametrize("name,fmt", sorted(BAD))
def test_bad_file_reports_expected_lines(name, fmt, monkeypatch, capsys):
    monkeypatch.chdir(DATA / "bad")
    before = _snapshot(DATA / "bad")
    code = run_data_check(name, fmt)
    out = capsys.readouterr()
    assert code == 1
    assert out.out.splitlines() == BAD[(name, fmt)]
    assert out.err == ""  # no traceback, no library noise
    assert _snapshot(DATA / "bad") == before  # nothing written


@pytest.mark.parametrize("name,fmt", sorted(GOOD))
def test_good_file_passes(name, fmt, monkeypatch, capsys):
    monkeypatch.chdir(DATA / "good")
    before = _snapshot(DATA / "good")
    assert run_data_check(name, fmt) == 0
    assert capsys.readouterr().out.splitlines() == GOOD[(name, fmt)]
    assert _snapshot(DATA / "good") == before


def test_unknown_format_is_one_line(capsys):
    assert run_data_check(str(DATA / "good" / "text.jsonl"), "yaml") == 1
    assert capsys.readouterr().out.splitlines() == [
        "unknown data format 'yaml'; valid: auto, pairwise, binary, score, helpsteer2, conversational, text, prompt"
    ]


def test_wrong_format_for_a_file_names_missing_columns(monkeypatch, capsys):
    monkeypatch.chdir(DATA / "good")
    assert run_data_check("pairwise.jsonl", "binary") == 1
    assert capsys.readouterr().out.splitlines() == [
        "pairwise.jsonl: field 'completion': missing column (format binary needs prompt, completion, label)",
        "pairwise.jsonl: field 'label': missing column (format binary needs prompt, completion, label)",
        "pairwise.jsonl: 2 problems in 3 rows (format binary)",
    ]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_tokenizer(
        ["a b c d e f g h", "one two three four five", "the cat sat on the mat"],
        tmp_path_factory.mktemp("tok"),
        vocab_size=300,
    )


@pytest.fixture()
def long_prompt_file(tmp_path, tokenizer):
    rows = [{"prompt": "a", "response": "x", "score": 0.5}, {"prompt": " a" * 40, "response": "y", "score": 0.5}]
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_prompt_over_limit_is_a_problem_only_with_truncation_error(long_prompt_file, tokenizer):
    ds = load_table(long_prompt_file)
    # the rendered prompt: "<s><|user|> " + text + "\n<|assistant|> " -> row 2 has far more than 16 tokens
    n2 = len(tokenizer("<s><|user|> " + " a" * 40 + "\n<|assistant|> ", add_special_tokens=False)["input_ids"])
    assert n2 > 16
    problems = validate(ds, "score", "long.jsonl", tokenizer=tokenizer, max_prompt_length=16, truncation="error")
    assert [str(p) for p in problems] == [
        f"long.jsonl:2: field 'prompt': prompt has {n2} tokens, over the limit of 16 (data.truncation=error)"
    ]
    for policy in ("drop", "truncate_prompt"):
        assert validate(ds, "score", "long.jsonl", tokenizer=tokenizer, max_prompt_length=16, truncation=policy) == []


def test_data_check_with_tokenizer_counts_long_prompts(long_prompt_file, tokenizer, capsys):
    cfg = DataConfig(max_prompt_length=16, truncation="drop")
    assert run_data_check(str(long_prompt_file), "score", data_cfg=cfg, tokenizer=tokenizer) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{long_prompt_file}: 2 rows valid (format score); 1 prompt over the length limit (data.truncation=drop)"
    ]
    cfg = DataConfig(max_prompt_length=16, truncation="error")
    assert run_data_check(str(long_prompt_file), "score", data_cfg=cfg, tokenizer=tokenizer) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{long_prompt_file}:2: field 'prompt': prompt has ")
