"""The verifiable instruction task: the gold reward on hand-written cases, the prompt parser, the seeded generator.

    .venv/bin/python -m pytest tests/unit/test_verifiable.py -q      (under a second; no torch, no model)

The gold cases are written by hand against the rules in una_hpc/task/verifiable.py (independent of the generator):
each check type passes and fails, with the boundaries (exactly N words, exactly K bullets), case-insensitive whole-word
keywords with plural endings, arithmetic answers inside extra text. The generator is deterministic per seed, every
prompt parses back to exactly its spec, and the train and held-out splits share no prompt.
"""

from __future__ import annotations

import pytest

from una_hpc.task.verifiable import (
    ANSWER,
    ARITHMETIC,
    BULLETS,
    EXCLUDE,
    INCLUDE,
    INSTRUCTION,
    JSON_ANSWER,
    LOWERCASE,
    MAX_WORDS,
    Check,
    PromptSpec,
    check_results,
    gold_reward,
    gold_reward_batch,
    parse_prompt,
    passes,
    sample_prompts,
    split_of,
    words,
)


def spec(*checks: Check, family: str = INSTRUCTION) -> PromptSpec:
    return PromptSpec("(hand-written)", family, tuple(checks))


# ------------------------------------------------------------------------------------------------ checks
@pytest.mark.parametrize(
    "response, ok",
    [
        ("one two three four five", True),  # exactly N = 5
        ("one two three four five six", False),  # N + 1
        ("One, two; three... four! five?", True),  # punctuation is no word
        ("don't well-known a b c", True),  # inner ' and - keep one word
        ("- a\n- b\n- c\n- d\n- e", True),  # bullet markers are no words
        ("1 2 3 4 5 6", False),  # numbers are words
    ],
)
def test_max_words(response, ok):
    assert passes(Check(MAX_WORDS, 5), response) is ok


def test_word_rule():
    assert words("It's a well-known fact -- **really**: 42 cats.") == [
        "It's",
        "a",
        "well-known",
        "fact",
        "really",
        "42",
        "cats",
    ]


@pytest.mark.parametrize(
    "response, found",
    [
        ("The ocean is big.", True),
        ("OCEAN waves", True),  # case-insensitive
        ("Oceans cover the earth.", True),  # plural "s"
        ("The oceanic crust.", False),  # a longer word is another word
        ("seaocean", False),  # must start a word
        ("ocean-side", True),  # a hyphen ends the word
        ("The sea is big.", False),
    ],
)
def test_keyword_matching(response, found):
    assert passes(Check(INCLUDE, "ocean"), response) is found
    assert passes(Check(EXCLUDE, "ocean"), response) is (not found)


def test_plural_es():
    assert passes(Check(INCLUDE, "beach"), "Two beaches.") and not passes(Check(EXCLUDE, "beach"), "Two beaches.")


@pytest.mark.parametrize(
    "response, ok",
    [
        ("all lowercase here, 42 times.", True),
        ("Not lowercase.", False),
        ("mostly lowercase but one I", False),
        ("123 456", False),  # no letter at all
        ("ça va très bien", True),
    ],
)
def test_lowercase(response, ok):
    assert passes(Check(LOWERCASE), response) is ok


@pytest.mark.parametrize(
    "response, ok",
    [
        ("- one\n- two\n- three", True),
        ("Here you go:\n- one\n- two\n- three\nHope it helps.", True),  # only bullet lines count
        ("* one\n* two\n• three", True),  # -, * and • markers
        ("  - one\n  - two\n  - three", True),  # indented
        ("- one\n- two", False),  # K - 1
        ("- one\n- two\n- three\n- four", False),  # K + 1
        ("1. one\n2. two\n3. three", False),  # numbered is not bulleted
        ("-one\n-two\n-three", False),  # marker needs a space
        ("- one - two - three", False),  # one line
    ],
)
def test_bullets(response, ok):
    assert passes(Check(BULLETS, 3), response) is ok


@pytest.mark.parametrize(
    "response, ok",
    [
        ('{"answer": "Paris"}', True),
        ('  {"answer": "Paris"}\n', True),
        ('```json\n{"answer": "Paris"}\n```', True),  # a fenced block
        ('{"answer": 42}', True),
        ('{"answer": ""}', False),  # empty answer
        ('{"answer": null}', False),
        ('{"answer": "Paris", "city": "Paris"}', False),  # only the one key
        ('{"Answer": "Paris"}', False),
        ('Sure! {"answer": "Paris"}', False),  # not only JSON
        ("{answer: Paris}", False),  # not JSON
        ('["Paris"]', False),
    ],
)
def test_json(response, ok):
    assert passes(Check(JSON_ANSWER), response) is ok


@pytest.mark.parametrize(
    "response, ok",
    [
        ("42", True),
        ("42.", True),
        ("The answer is 42.", True),  # extra text: the last number counts
        ("**42**", True),
        ("42.0", True),
        ("17 + 25 = 42", True),  # the working shown, then the result
        ("42, not 43", False),  # the last number is 43
        ("43", False),
        ("forty-two", False),  # no digits
        ("420", False),
        ("4 2", False),
    ],
)
def test_arithmetic(response, ok):
    assert passes(Check(ANSWER, 42), response) is ok


def test_arithmetic_negative_and_zero():
    assert passes(Check(ANSWER, 0), "0") and passes(Check(ANSWER, -3), "It is -3.")
    assert not passes(Check(ANSWER, 3), "-3")


def test_reward_is_the_fraction_of_checks_passed():
    s = spec(Check(MAX_WORDS, 5), Check(INCLUDE, "happy"))
    assert gold_reward(s, "I am happy") == 1.0
    assert gold_reward(s, "I am sad") == 0.5
    assert gold_reward(s, "I am very very very sad") == 0.0
    assert check_results(s, "I am very very very happy") == [False, True]
    three = spec(Check(LOWERCASE), Check(EXCLUDE, "dog"), Check(MAX_WORDS, 3))
    assert gold_reward(three, "cats are nice") == 1.0
    assert gold_reward(three, "Dogs are nice") == pytest.approx(1 / 3)


def test_empty_response_scores_zero():
    s = spec(Check(MAX_WORDS, 5), Check(EXCLUDE, "dog"))  # both would pass on an empty string
    assert gold_reward(s, "") == 0.0 and gold_reward(s, " \n ") == 0.0


def test_unknown_check_kind():
    with pytest.raises(ValueError, match="unknown check kind"):
        passes(Check("rhyme"), "x")


# ------------------------------------------------------------------------------------------------ parsing
def test_parse_hand_written_prompts():
    p = parse_prompt('Describe the moon. Use at most 20 words. Include the word "light".')
    assert p.family == INSTRUCTION and p.checks == (Check(MAX_WORDS, 20), Check(INCLUDE, "light"))
    p = parse_prompt("What is 17 + 25? Answer with the number only.")
    assert p.family == ARITHMETIC and p.checks == (Check(ANSWER, 42),)
    assert parse_prompt("Compute 9 times 7. Reply with just the number.").checks == (Check(ANSWER, 63),)
    assert parse_prompt("Calculate 30 - 41 and give only the number.").checks == (Check(ANSWER, -11),)
    p = parse_prompt('Tell me about tea. Reply only with JSON of the form {"answer": "..."}.')
    assert p.checks == (Check(JSON_ANSWER),)


@pytest.mark.parametrize(
    "text",
    [
        "Describe the moon.",  # no instruction
        "Describe the moon. Use at most 20 words. Use at most 10 words.",  # the same check twice
        "Describe the moon.  Use at most 20 words.",  # not the exact rendering
        "Describe the moon. Use at most 20 words. Be nice.",  # an unknown sentence
        "Describe Mars. Use at most 20 words.",  # an unknown topic
        "What is 17 + 25?",
        "What is the capital of France?",
        "",
    ],
)
def test_parse_rejects_other_text(text):
    assert parse_prompt(text) is None


def test_batch_scores_by_prompt_text_and_refuses_foreign_prompts():
    prompts = [
        "What is 2 + 3? Answer with the number only.",
        [{"role": "user", "content": 'Describe cats. Do not use the word "cat".'}],
    ]
    assert gold_reward_batch(prompts, ["5", "Cats purr."]) == [1.0, 0.0]
    assert gold_reward_batch(prompts + ["What is the capital of France?"], ["5", "x", "Paris"]) is None
    assert (
        gold_reward_batch([[{"role": "assistant", "content": "What is 2 + 3? Answer with the number only."}]], ["5"])
        is None
    )
    with pytest.raises(ValueError):
        gold_reward_batch(prompts, ["5"])


# ------------------------------------------------------------------------------------------------ generator
def test_generator_is_deterministic_per_seed():
    a, b = sample_prompts(64, seed=3), sample_prompts(64, seed=3)
    assert a == b
    assert [s.text for s in sample_prompts(64, seed=4)] != [s.text for s in a]
    assert sample_prompts(16, seed=3, split="heldout") == sample_prompts(16, seed=3, split="heldout")


def test_every_generated_prompt_parses_to_its_spec():
    for split in ("train", "heldout"):
        specs = sample_prompts(400, seed=0, split=split)
        assert len({s.text for s in specs}) == len(specs)
        for s in specs:
            assert parse_prompt(s.text) == s, s.text
            assert 1 <= len(s.checks) <= 2
            kinds = {c.kind for c in s.checks}
            assert not {BULLETS, JSON_ANSWER} <= kinds
        assert {s.family for s in specs} == {INSTRUCTION, ARITHMETIC}
        assert {c.kind for s in specs for c in s.checks} == {
            MAX_WORDS,
            INCLUDE,
            EXCLUDE,
            LOWERCASE,
            BULLETS,
            JSON_ANSWER,
            ANSWER,
        }


def test_train_and_heldout_are_disjoint():
    train = {s.text for seed in (0, 1) for s in sample_prompts(500, seed=seed)}
    heldout = {s.text for seed in (0, 1) for s in sample_prompts(200, seed=seed, split="heldout")}
    assert not train & heldout
    assert all(split_of(t) == "train" for t in train) and all(split_of(t) == "heldout" for t in heldout)


def test_word_limit_leaves_room_for_the_bullets():
    for s in sample_prompts(2000, seed=0):
        values = {c.kind: c.value for c in s.checks}
        if BULLETS in values and MAX_WORDS in values:
            assert values[MAX_WORDS] >= 4 * values[BULLETS]


def test_unknown_split():
    with pytest.raises(ValueError, match="split"):
        sample_prompts(1, split="test")
