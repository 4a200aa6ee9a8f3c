"""`una-hpc bench replicate --quick`: every method of the paper's comparison trains, is evaluated and lands in the
report, with the equal wall-clock rerun of the online pair; a second call runs nothing again.

    .venv/bin/python -m pytest tests/integration/test_replicate.py -q      # about 3 minutes on 2 cores
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from una_hpc.bench.methods import METHODS

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _replicate(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "una_hpc.cli", "bench", "replicate", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)


def test_quick_replicate_reports_every_method(tmp_path):
    runs, report = tmp_path / "runs", tmp_path / "report"
    p = _replicate("--quick", "--out", str(runs), "--report-dir", str(report))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    result = json.loads((report / "replicate.json").read_text())
    rows = result["methods"]
    timed = [k for k in rows if k.endswith("@time")]
    assert set(rows) == {m.key for m in METHODS} | set(timed) and len(timed) == 1
    for key, row in rows.items():
        g = row["gold"]
        assert 0 <= g["lo"] <= g["mean"] <= g["hi"] <= 1, key
        assert row["seeds"] == 1 and row["steps"] >= 1, key
    for m in METHODS:
        assert rows[m.key]["steps"] == (2 if m.online else 3), m.key  # the quick mode's step counts
        assert len(rows[m.key]["models"]) == len(m.models)
    # The slower online method ran again on the faster one's training seconds: it fits in that budget's steps.
    assert rows[timed[0]]["steps"] <= 2
    assert {c["claim"] for c in result["claims"]} == {">", ">=", "~", "vs"}
    md = (report / "replicate.md").read_text()
    for m in METHODS:
        assert f"| {m.label} |" in md
    for png in ("replicate_gold.png", "replicate_reward_kl.png", "replicate_online.png"):
        assert (report / png).stat().st_size > 1000
    # Finished runs are kept: a second call only rebuilds the report.
    again = _replicate("--quick", "--out", str(runs), "--report-dir", str(report))
    assert again.returncode == 0 and "log " not in again.stdout, again.stdout


def test_unknown_method_is_one_line(tmp_path):
    p = _replicate("--methods", "dpo,sft", "--out", str(tmp_path))
    assert p.returncode == 1
    assert p.stderr.strip() == "error: --methods: unknown sft; known: " + ", ".join(m.key for m in METHODS)
