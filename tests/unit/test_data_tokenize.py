"""Tokenization: chat-template and plain rendering, eos, the prompt-length policies, max_length on the completion,
and labels only on completion tokens once collated."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from una_hpc.config import DataConfig
from una_hpc.data import DataError, Example, tokenize_data, tokenize_examples, unpacked

TEXTS = ["the cat sat on the mat", "one two three four five", "red blue green", "yes no please answer"]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    from una_hpc.models.tiny import train_tokenizer

    out = tmp_path_factory.mktemp("tok")
    train_tokenizer(TEXTS * 5, out, vocab_size=300)
    return out


@pytest.fixture(scope="module")
def tok(tok_dir):
    return AutoTokenizer.from_pretrained(str(tok_dir))


@pytest.fixture(scope="module")
def plain_tok(tok_dir):
    t = AutoTokenizer.from_pretrained(str(tok_dir))
    t.chat_template = None  # this instance has no template: plain concatenation
    return t


def _ids(t, text):
    return t(text, add_special_tokens=False)["input_ids"]


EXAMPLES = [
    Example(0, "pairwise", "the cat", ["sat on", "red"], float("nan"), [1]),
    Example(1, "binary", "one two", ["three"], 1.0, [2]),
    Example(
        2,
        "score",
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "red"}],
        ["blue green"],
        0.25,
        [3],
    ),
]


def test_chat_template_rendering(tok):
    res = tokenize_examples(EXAMPLES, tok, max_length=128, max_prompt_length=64)
    eos = tok.eos_token_id
    pair, binary, score = res
    # the tiny template, written out by hand: bos, role tags, and the generation prompt "<|assistant|> "
    assert pair.sequences[0][0] == _ids(tok, "<s><|user|> the cat\n<|assistant|> ")
    assert pair.sequences[1][0] == pair.sequences[0][0]
    assert [c for _, c in pair.sequences] == [_ids(tok, "sat on") + [eos], _ids(tok, "red") + [eos]]
    assert score.sequences[0][0] == _ids(tok, "<s><|system|> be brief\n<|user|> red\n<|assistant|> ")
    assert (binary.feedback, binary.target, score.target) == ("binary", 1.0, 0.25)
    assert [e.example_id for e in res] == [0, 1, 2]


def test_plain_rendering_without_template(plain_tok):
    pair, _ = tokenize_examples(EXAMPLES[:2], plain_tok, max_length=128, max_prompt_length=64)
    completion = _ids(plain_tok, "sat on") + [plain_tok.eos_token_id]
    assert pair.sequences[0] == (plain_tok("the cat")["input_ids"], completion)


def test_message_list_without_template_is_one_line_naming_the_row(plain_tok):
    with pytest.raises(DataError) as err:
        tokenize_examples(EXAMPLES, plain_tok, max_length=128, max_prompt_length=64, source="d.jsonl")
    assert str(err.value).startswith("d.jsonl:3: field 'prompt': a message list needs a tokenizer with a chat template")
    assert "\n" not in str(err.value)


def test_batched_ids_equal_the_hf_tokenizer_one_example_at_a_time(tok):
    # Many examples, repeated prompts (the batched path encodes each distinct prompt once), strings and message
    # lists: every sequence must equal what the HF tokenizer gives for that one example, computed here directly.
    import random

    words = " ".join(TEXTS).split()
    rng = random.Random(3)
    prompts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 9))) for _ in range(12)]
    prompts += [[{"role": "system", "content": "be brief"}, {"role": "user", "content": p}] for p in prompts[:4]]
    examples = []
    for i in range(40):
        feedback = ("pairwise", "binary", "score")[i % 3]
        completions = [
            " ".join(rng.choice(words) for _ in range(rng.randint(1, 7)))
            for _ in range(2 if feedback == "pairwise" else 1)
        ]
        examples.append(Example(i, feedback, rng.choice(prompts), completions, 0.5, [i + 1]))
    assert len({str(ex.prompt) for ex in examples}) < len(examples)  # prompts really repeat
    got = tokenize_examples(examples, tok, max_length=256, max_prompt_length=128)
    assert got == tokenize_data(examples, tok, DataConfig(max_prompt_length=128), max_length=256).examples
    assert [ex.example_id for ex in got] == list(range(40))
    for ex, res in zip(examples, got):
        messages = [{"role": "user", "content": ex.prompt}] if isinstance(ex.prompt, str) else ex.prompt
        prompt_ids = list(
            tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        )
        assert prompt_ids[0] == tok.bos_token_id and prompt_ids.count(tok.bos_token_id) == 1  # one bos, the template's
        want = [(prompt_ids, tok.encode(c, add_special_tokens=False) + [tok.eos_token_id]) for c in ex.completions]
        assert res.sequences == want, ex
        assert (res.feedback, res.target) == (ex.feedback, ex.target)


LONG = Example(7, "binary", " ".join(["one two three"] * 10), ["four five"], 0.0, [9])


def test_truncate_prompt_keeps_the_last_tokens(tok):
    full = tokenize_data([LONG], tok, DataConfig(max_prompt_length=1000), max_length=2000).examples[0]
    res = tokenize_data([LONG], tok, DataConfig(max_prompt_length=8, truncation="truncate_prompt"), max_length=64)
    (ex,) = res.examples
    assert ex.sequences[0][0] == full.sequences[0][0][-8:] and res.truncated_prompts == 1
    assert ex.sequences[0][1] == full.sequences[0][1]


def test_drop_and_error_policies(tok):
    res = tokenize_data([LONG, EXAMPLES[1]], tok, DataConfig(max_prompt_length=12, truncation="drop"), 64)
    assert [e.example_id for e in res.examples] == [1] and res.dropped == [7]
    with pytest.raises(DataError) as err:
        tokenize_data([LONG], tok, DataConfig(max_prompt_length=8, truncation="error"), 64, source="d.jsonl")
    assert str(err.value).startswith("d.jsonl:9: field 'prompt': prompt has ")
    assert str(err.value).endswith("over the limit of 8 (data.truncation=error)")


def test_max_length_cuts_the_completion_end(tok):
    ex = Example(0, "score", "red", [" ".join(["blue green"] * 20)], 0.5, [1])
    full = tokenize_data([ex], tok, DataConfig(), max_length=1000).examples[0].sequences[0]
    res = tokenize_data([ex], tok, DataConfig(), max_length=16)
    prompt, completion = res.examples[0].sequences[0]
    assert len(prompt) + len(completion) == 16 and res.truncated_completions == 1
    assert completion == full[1][: 16 - len(prompt)]
    # the prompt limit leaves room for one completion token even when max_prompt_length >= max_length
    res = tokenize_data([LONG], tok, DataConfig(max_prompt_length=100), max_length=10)
    prompt, completion = res.examples[0].sequences[0]
    assert (len(prompt), len(completion)) == (9, 1)


def test_labels_only_on_completion_tokens(tok):
    tokenized = tokenize_examples(EXAMPLES, tok, max_length=128, max_prompt_length=100)
    batch = unpacked(tokenized, tok.pad_token_id)
    seqs = [s for ex in tokenized for s in ex.sequences]
    for r, (prompt, completion) in enumerate(seqs):
        labels = batch.labels[r]
        kept = labels[labels != -100].tolist()
        assert kept == completion  # every completion token is predicted exactly once, nothing else
        n = len(prompt) + len(completion)
        assert (labels[: len(prompt) - 1] == -100).all() and (labels[n - 1 :] == -100).all()
        assert batch.input_ids[r, :n].tolist() == prompt + completion


def test_a_prompt_the_chat_template_rejects_is_one_line(tok_dir):
    import datasets

    from una_hpc.data import validate

    strict = AutoTokenizer.from_pretrained(str(tok_dir))
    strict.chat_template = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    rows = [
        {
            "prompt": [{"role": "user", "content": "hi"}],
            "completion": [{"role": "assistant", "content": "a"}],
            "label": 1,
        },
        {
            "prompt": [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}],
            "completion": [{"role": "assistant", "content": "b"}],
            "label": 0,
        },
    ]
    problems = validate(
        datasets.Dataset.from_list(rows), "conversational", "c.jsonl", tokenizer=strict, max_prompt_length=64
    )
    assert [str(p) for p in problems] == [
        "c.jsonl:2: field 'prompt': the chat template cannot render it (System role not supported)"
    ]
