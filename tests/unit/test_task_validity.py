"""The task builder never writes a row validation refuses: resampled, else dropped, and counted.

.venv/bin/python -m pytest tests/unit/test_task_validity.py -x -q
"""

from __future__ import annotations

from datasets import Dataset

from una_hpc.data.validate import validate
from una_hpc.task.grammar import gold_attributes
from una_hpc.task.validity import keep_valid, row_problems


def _row(prompt: str, response: str) -> dict:
    return {"prompt": prompt, "response": response, **gold_attributes(prompt, response)}


def test_refused_rows_are_resampled_then_dropped_and_counted():
    rows = [_row("add 1 and 2", "3"), _row("add 2 and 2", ""), _row("spell cat", "  "), _row("add 5 and 5", "10")]
    assert row_problems(rows[1]) == ["field 'response': empty string"] and row_problems(rows[0]) == []
    calls = []

    def resample(prompts: list[str], seed: int) -> list[dict]:
        # "add" prompts get a valid answer on the second round; "spell" never does.
        calls.append((prompts, seed))
        return [_row(p, "4" if p.startswith("add") and len(calls) == 2 else "") for p in prompts]

    kept, counts = keep_valid(rows, resample, seed=7, tries=3)
    assert calls == [
        (["add 2 and 2", "spell cat"], 7001),
        (["add 2 and 2", "spell cat"], 7002),
        (["spell cat"], 7003),
    ]
    assert [r["response"] for r in kept] == ["3", "4", "10"]
    assert counts == {
        "rejected": 2,
        "resampled": 1,
        "dropped": 1,
        "reasons": {"field 'response': empty string": 2},
    }
    assert validate(Dataset.from_list(kept), "helpsteer2", "kept.jsonl") == []
    assert len(validate(Dataset.from_list(rows), "helpsteer2", "rows.jsonl")) == 2
