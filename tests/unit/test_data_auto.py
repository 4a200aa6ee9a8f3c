"""`data.format: auto`: every TRL dataset type, detected from its columns and value shapes; scored pairs; splits.

    .venv/bin/python -m pytest tests/unit/test_data_auto.py -x -q

tests/data/trl holds one small file per TRL type and shape; EXPECTED.tsv there lists every line `data check
--format auto` prints for each (the type is in the summary line). One training step per file is in
tests/integration/test_trl_types.py.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import datasets
import pytest

from una_hpc.config import ConfigError, DataConfig, load_config
from una_hpc.data import DataError, load_table, prompts_of, run_data_check, to_examples
from una_hpc.data.convert import records_to_examples
from una_hpc.data.detect import detect_columns
from una_hpc.data.validate import parse_report

TRL = Path(__file__).resolve().parents[1] / "data" / "trl"
REPO = Path(__file__).resolve().parents[2]


def _expected() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (TRL / "EXPECTED.tsv").read_text().splitlines():
        if line and not line.startswith("#"):
            name, text = line.split("\t")
            out.setdefault(name, []).append(text)
    return out


EXPECTED = _expected()


def test_every_fixture_is_listed():
    assert set(EXPECTED) == {p.name for p in TRL.glob("*.jsonl")}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_data_check_auto_prints_the_expected_lines(name, monkeypatch):
    monkeypatch.chdir(TRL)
    out = io.StringIO()
    rc = run_data_check(name, "auto", out=out)
    assert out.getvalue().splitlines() == EXPECTED[name]
    assert rc == (0 if "valid (format auto: " in EXPECTED[name][-1] else 1)


@pytest.mark.parametrize(
    "name, shape, fmt",
    [
        ("standard_preference", "standard", "pairwise"),
        ("conversational_preference_implicit", "conversational", "conversational"),
        ("standard_unpaired", "standard", "binary"),
        ("conversational_unpaired", "conversational", "conversational"),
        ("conversational_prompt_only", "conversational", "prompt"),
        ("standard_helpsteer2", "standard", "helpsteer2"),
    ],
)
def test_the_shape_comes_from_the_values(name, shape, fmt):
    detected = detect_columns(load_table(TRL / f"{name}.jsonl"), name)
    assert (detected.shape, detected.fmt) == (shape, fmt)


def test_detection_reads_the_first_non_null_value():
    ds = datasets.Dataset.from_list(
        [{"prompt": None, "chosen": None, "rejected": None}, {"prompt": "a", "chosen": [{}], "rejected": [{}]}]
    )
    assert detect_columns(ds, "x").fmt == "conversational"


def test_implicit_standard_prompt_is_the_common_beginning():
    report = parse_report(load_table(TRL / "standard_preference_implicit.jsonl"), "auto", "x")
    first = report.records[0][0]
    # TRL's extract_prompt: the space before the first difference goes to the completions
    assert (first.prompt, first.completions) == ("count the red cat", (" one cat", " two dog"))


def test_offline_training_on_prompts_only_is_one_line_naming_the_type():
    path = TRL / "standard_prompt_completion.jsonl"
    with pytest.raises(DataError) as err:
        to_examples(load_table(path), "auto", "pairwise", DataConfig(), str(path))
    line = str(err.value)
    assert line.startswith(f"{path}: standard prompt-completion data (columns prompt, completion) has no feedback")
    assert "una_online" in line and "\n" not in line


@pytest.mark.parametrize(
    "name",
    [
        "standard_prompt_only",
        "conversational_prompt_only",
        "standard_prompt_completion",
        "conversational_prompt_completion",
        "standard_preference",
        "conversational_preference_scores",
        "conversational_unpaired",
        "standard_scored",
    ],
)
def test_online_prompts_from_any_type(name):
    prompts = prompts_of(load_table(TRL / f"{name}.jsonl"), "auto", name)
    texts = [p if isinstance(p, str) else p[-1]["content"] for p in prompts]
    assert texts == ["count the red cat", "sort one two three", "is the dog blue"]


def test_online_prompt_set_reads_auto_data(tiny_model_dir):
    from una_hpc.models.policy import load_tokenizer
    from una_hpc.trainer.online_common import load_prompt_set

    cfg = load_config(
        REPO / "configs/online_una.yaml", [f"data.path={TRL / 'conversational_prompt_only.jsonl'}", "data.format=auto"]
    )
    tok = load_tokenizer(tiny_model_dir)
    prompts = load_prompt_set(cfg, Path(cfg.data.path), cfg.data.format, tok)
    assert cfg.data.format == "auto" and len(prompts.ids) == 3
    # the system message reaches the model: rendered once by the chat template
    want = tok.apply_chat_template(prompts.texts[0], add_generation_prompt=True, tokenize=True, return_dict=False)
    assert prompts.ids[0] == want and prompts.ids[0].count(tok.bos_token_id) == 1
    assert tok.decode(prompts.ids[0]).count("please answer") == 1


# --- scored pairs: score_chosen / score_rejected -------------------------------------------------------------
SCORES = [(10, 1), (7, 4), (5.5, 5.5)]  # the raw scores of *_preference_scores.jsonl, rows 1-3


def _normalized(lo: float, hi: float) -> list[float]:
    return [(v - lo) / (hi - lo) for pair in SCORES for v in pair]


@pytest.mark.parametrize("name", ["standard_preference_scores", "conversational_preference_scores"])
def test_score_view_scores_both_completions_range_read_from_the_data(name):
    ex = to_examples(load_table(TRL / f"{name}.jsonl"), "auto", "score", DataConfig())
    assert [e.feedback for e in ex] == ["score"] * 6
    assert [e.completions[0] for e in ex] == [
        "one cat",
        "two dog",
        "one two three",
        "three two one",
        "no the dog is red",
        "yes",
    ]
    assert [e.target for e in ex] == pytest.approx(_normalized(1, 10))
    assert [e.rows for e in ex] == [[1], [1], [2], [2], [3], [3]]


def test_score_range_from_the_config_maps_and_bounds_the_scores():
    path = TRL / "standard_preference_scores.jsonl"
    ex = to_examples(load_table(path), "auto", "score", DataConfig(score_range=[0.0, 20.0]))
    assert [e.target for e in ex] == pytest.approx(_normalized(0, 20))
    with pytest.raises(DataError) as err:
        to_examples(load_table(path), "auto", "score", DataConfig(score_range=[0.0, 8.0]), str(path))
    assert [str(p) for p in err.value.problems] == [
        f"{path}:1: field 'score_chosen': 10 is outside data.score_range [0, 8]"
    ]


def test_mixed_view_gives_each_row_as_pair_and_scores():
    ex = to_examples(load_table(TRL / "standard_preference_scores.jsonl"), "auto", "mixed", DataConfig())
    assert [e.feedback for e in ex] == ["pairwise", "score", "score"] * 3
    assert ex[0].completions == ["one cat", "two dog"] and math.isnan(ex[0].target)
    assert [e.target for e in ex if e.feedback == "score"] == pytest.approx(_normalized(1, 10))


def test_pair_view_of_scored_pairs_keeps_the_pairs():
    ex = to_examples(load_table(TRL / "standard_preference_scores.jsonl"), "auto", "pairwise", DataConfig())
    assert [e.completions for e in ex][0] == ["one cat", "two dog"] and len(ex) == 3


def test_score_loss_on_scored_pairs_equals_the_hand_computed_loss():
    import torch

    from una_hpc.losses.una_score import una_score_loss

    ex = to_examples(load_table(TRL / "standard_preference_scores.jsonl"), "auto", "score", DataConfig())
    policy = torch.tensor([-3.0, -5.0, -2.0, -4.0, -6.0, -1.0], dtype=torch.float64)
    ref = torch.tensor([-4.0, -4.0, -2.5, -3.0, -6.0, -2.0], dtype=torch.float64)
    beta = 0.5
    targets = torch.tensor([e.target for e in ex], dtype=torch.float64)
    # by hand: scores (10, 1), (7, 4), (5.5, 5.5) on 1..10 -> 1, 0, 2/3, 1/3, 1/2, 1/2
    want = [1.0, 0.0, 2 / 3, 1 / 3, 0.5, 0.5]
    hand = sum((1 / (1 + math.exp(-beta * (p - r))) - s) ** 2 for p, r, s in zip(policy.tolist(), ref.tolist(), want))
    got = una_score_loss(policy, ref, targets, beta)
    assert float(got) == pytest.approx(hand / 6, rel=1e-6)  # losses compute in fp32


def test_constant_scores_outside_0_1_ask_for_a_range(tmp_path):
    path = tmp_path / "flat.jsonl"
    row = {"prompt": "count", "chosen": "one", "rejected": "two", "score_chosen": 5, "score_rejected": 5}
    path.write_text(json.dumps(row) + "\n")
    out = io.StringIO()
    assert run_data_check(str(path), "auto", out=out) == 1
    assert out.getvalue().splitlines()[0] == (
        f"{path}: field 'score_chosen': every score is 5, so no range can be read from the data: "
        "set data.score_range=[low,high]"
    )


def test_scores_inside_0_1_are_kept(tmp_path):
    path = tmp_path / "unit.jsonl"
    row = {"prompt": "count", "chosen": "one", "rejected": "two", "score_chosen": 0.75, "score_rejected": 0.25}
    path.write_text(json.dumps(row) + "\n")
    ex = records_to_examples(parse_report(load_table(path), "auto", str(path)).records, "score", DataConfig())
    assert [e.target for e in ex] == [0.75, 0.25]


# --- config and splits ------------------------------------------------------------------------------------
def test_config_defaults_to_auto_and_checks_score_range():
    cfg = load_config(REPO / "configs/quickstart.yaml", ["data.score_range=[1,10]", "data.eval_split=test_prefs"])
    assert (cfg.data.format, cfg.data.score_range, cfg.data.eval_split) == ("auto", [1.0, 10.0], "test_prefs")
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "configs/quickstart.yaml", ["data.score_range=[10,1]"])
    assert (
        str(err.value) == "config key data.score_range: must be empty or [low, high] with low < high, got [10.0, 1.0]"
    )


def test_split_of_a_hub_style_dir(tmp_path):
    data = tmp_path / "ultrafeedback" / "data"
    data.mkdir(parents=True)
    rows = load_table(TRL / "conversational_preference_scores.jsonl").to_list()
    for split, part in (("train_prefs", rows), ("test_prefs", rows[:1])):
        datasets.Dataset.from_list(part).to_parquet(str(data / f"{split}-00000-of-00001.parquet"))
    out = io.StringIO()
    assert run_data_check(str(data.parent), "auto", data_cfg=DataConfig(split="test_prefs"), out=out) == 0
    assert out.getvalue().startswith(f"{data.parent}: 1 row valid (format auto: conversational preference, scores")
    out = io.StringIO()
    assert run_data_check(str(data.parent), "auto", data_cfg=DataConfig(split="dev"), out=out) == 1
    assert "no split 'dev' (splits: " in out.getvalue()


def test_eval_split_reads_the_held_out_split_of_the_training_data(tmp_path, tiny_model_dir):
    """data.eval_split with an empty data.eval_path: eval reads that split of data.path; with data.eval_path set, that
    split of eval_path. The prompts are the split's own (train_prefs and test_prefs hold different ones)."""
    from una_hpc.trainer.evaluate import read_eval_prompts
    from una_hpc.trainer.inputs import resolve_inputs

    data = tmp_path / "prefs"
    (data / "data").mkdir(parents=True)  # the Hub's layout: data/<split>-00000-of-00001.parquet
    rows = [{"prompt": f"question {i}", "chosen": "yes", "rejected": "no"} for i in range(4)]
    for split, part in (("train_prefs", rows[:3]), ("test_prefs", rows[3:])):
        datasets.Dataset.from_list(part).to_parquet(str(data / "data" / f"{split}-00000-of-00001.parquet"))
    base = [f"model.path={tiny_model_dir}", f"data.path={data}", "data.split=train_prefs"]
    inputs = resolve_inputs(load_config(REPO / "configs/quickstart.yaml", [*base, "data.eval_split=test_prefs"]))
    assert (inputs.eval_path, inputs.eval_split) == (data, "test_prefs")
    assert read_eval_prompts(inputs.eval_path, inputs.eval_split) == ["question 3"]
    other = tmp_path / "heldout.jsonl"
    other.write_text(json.dumps({"prompt": "elsewhere"}) + "\n")
    inputs = resolve_inputs(load_config(REPO / "configs/quickstart.yaml", [*base, f"data.eval_path={other}"]))
    assert (inputs.eval_path, inputs.eval_split) == (other, "train")
    assert read_eval_prompts(inputs.eval_path, inputs.eval_split) == ["elsewhere"]


def test_cli_detects_by_default_and_takes_a_split(tmp_path):
    import subprocess
    import sys

    data = tmp_path / "prefs" / "data"
    data.mkdir(parents=True)
    rows = load_table(TRL / "standard_preference.jsonl").to_list()
    datasets.Dataset.from_list(rows).to_parquet(str(data / "train_prefs-00000-of-00001.parquet"))
    cmd = [sys.executable, "-m", "una_hpc.cli", "data", "check"]
    res = subprocess.run([*cmd, str(data.parent), "--split", "train_prefs"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.splitlines() == [f"{data.parent}: 3 rows valid (format auto: standard preference -> pairwise)"]
    res = subprocess.run([*cmd, str(TRL / "partial.jsonl")], capture_output=True, text=True)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stdout.splitlines() == [
        f"{TRL / 'partial.jsonl'}: columns prompt, chosen fit no TRL dataset type (nearest: preference (missing "
        "rejected)); set data.format (or --format)"
    ]


@pytest.mark.parametrize("conversational", [False, True])
def test_one_score_column_without_the_other_is_a_column_error(tmp_path, conversational):
    path = tmp_path / "half.jsonl"
    reply = (lambda t: [{"role": "assistant", "content": t}]) if conversational else (lambda t: t)
    row = {"prompt": "count", "chosen": reply("one"), "rejected": reply("two"), "score_chosen": 3}
    path.write_text(json.dumps(row) + "\n")
    out = io.StringIO()
    assert run_data_check(str(path), "auto", out=out) == 1
    assert out.getvalue().splitlines()[0] == (
        f"{path}: field 'score_rejected': missing column (format scored preference needs both score_chosen and "
        "score_rejected)"
    )
