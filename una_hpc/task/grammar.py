"""The embedded default task: a synthetic HelpSteer-style task with an exact, programmatic gold reward.

    python -m una_hpc.task.grammar              # prints sample prompts, graded responses and their gold attributes
    .venv/bin/python -m pytest tests/unit/test_synthetic.py -q

Prompts come from a small grammar of eight task families (count, list, sort, repeat, add, opposite, reverse,
spell). The gold reward parses the prompt, derives the expected answer, and rates a response on the five HelpSteer2
attributes (integers 0-4), computed from the text alone:

- words: lower-cased `[a-z0-9]+` runs of the response; filler words ("sure", "here", "hope", ...) are not content.
- correctness = floor(4 * match), so 4 only for an exact answer: match is LCS(content, answer) / max(len(content),
  len(answer)); for `list` prompts any distinct in-category items count (in any order), capped at the number asked.
- coherence = 4 - garbage - loops (floor 0): garbage = words outside the task vocabulary (not numbers either);
  loops = adjacent repeated words beyond those the answer itself has.
- verbosity = 2 + sign(extra) * min(2, ceil(|extra| / 2)), extra = number of words - number of answer words.
- helpfulness = correctness - 1 if verbosity is 4 - 1 if there are loops (floor 0).
- complexity = distinct content words // 2, at most 4.
An empty response scores 0 on every attribute. `gold_score` combines them with una_hpc.data.helpsteer's
combine_attributes; `gold_rewards` is the batched form the trainer and eval call through the eval.gold_reward hook.

Response generators of graded quality (correct, verbose, wrong, offtopic, repetitive, garbled) make SFT data that
is imperfect on purpose. Pure python: this module uses no torch (importing una_hpc.data still loads it).
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..data.helpsteer import DEFAULT_ATTRIBUTE_WEIGHTS, combine_attributes

ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
FAMILIES = ("count", "list", "sort", "repeat", "add", "opposite", "reverse", "spell")
QUALITIES = ("correct", "verbose", "wrong", "offtopic", "repetitive", "garbled")
DEFAULT_SFT_MIX = {"correct": 0.4, "verbose": 0.2, "wrong": 0.2, "repetitive": 0.08, "offtopic": 0.06, "garbled": 0.06}
"""Quality mix of the SFT data: imperfect on purpose so that alignment has room."""

CATEGORIES = {
    "colors": ("red", "blue", "green", "yellow", "black", "white", "pink", "brown"),
    "animals": ("cat", "dog", "cow", "pig", "fox", "owl", "bee", "hen"),
    "fruits": ("apple", "pear", "fig", "plum", "lime", "kiwi", "peach", "grape"),
}
OPPOSITES = (
    ("hot", "cold"),
    ("big", "small"),
    ("up", "down"),
    ("fast", "slow"),
    ("old", "new"),
    ("day", "night"),
    ("open", "closed"),
    ("light", "dark"),
    ("wet", "dry"),
    ("high", "low"),
    ("happy", "sad"),
    ("early", "late"),
)
NUMBER_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5}
FILLER = frozenset(
    "sure ok okay here it is the answer we hope this helps let me know if you need more of course "
    "so that was easy".split()
)
INTROS = ("sure! here it is:", "of course! the answer is:", "okay, so the answer is:", "sure, here is the answer:")
OUTROS = ("hope this helps!", "let me know if you need more.", "that was easy.", "")
ITEMS = tuple(w for ws in CATEGORIES.values() for w in ws)
_OPP = {a: b for a, b in OPPOSITES} | {b: a for a, b in OPPOSITES}
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Gold:
    """The expected answer of a prompt."""

    family: str
    tokens: tuple[str, ...]
    """The canonical answer, word by word."""
    pool: frozenset[str] | None = None
    """`list` prompts: any len(tokens) distinct words of this pool, in any order, are correct."""


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


# ---------------------------------------------------------------------------------------------- prompt grammar
def _count_seq(a: int, b: int) -> tuple[str, ...]:
    step = 1 if b >= a else -1
    return tuple(str(i) for i in range(a, b + step, step))


def _sample_count(rng: random.Random) -> str:
    n = rng.randint(3, 7)
    if rng.random() < 0.3:
        a = rng.randint(n, 15)
        return f"count down from {a} to {a - n + 1}"
    a = rng.randint(1, 15)
    return rng.choice(("count from {a} to {b}", "count up from {a} to {b}")).format(a=a, b=a + n - 1)


def _sample_list(rng: random.Random) -> str:
    n, cat = rng.choice(tuple(NUMBER_WORDS)), rng.choice(tuple(CATEGORIES))
    return rng.choice(("list {n} {c}", "name {n} {c}", "give me {n} {c}")).format(n=n, c=cat)


def _sample_sort(rng: random.Random) -> str:
    ws = " ".join(rng.sample(ITEMS, rng.randint(3, 5)))
    return rng.choice(("sort: {w}", "sort these words: {w}", "put in order: {w}")).format(w=ws)


def _sample_repeat(rng: random.Random) -> str:
    return rng.choice(("repeat {w} {k} times", "say {w} {k} times")).format(w=rng.choice(ITEMS), k=rng.randint(2, 5))


def _sample_add(rng: random.Random) -> str:
    a, b = rng.randint(0, 20), rng.randint(0, 20)
    return rng.choice(("add {a} and {b}", "what is {a} plus {b}", "sum of {a} and {b}")).format(a=a, b=b)


def _sample_opposite(rng: random.Random) -> str:
    w = rng.choice(tuple(_OPP))
    return rng.choice(("what is the opposite of {w}", "opposite of {w}", "give the opposite of {w}")).format(w=w)


def _sample_reverse(rng: random.Random) -> str:
    ws = " ".join(rng.sample(ITEMS, rng.randint(3, 5)))
    return rng.choice(("reverse: {w}", "reverse the order: {w}")).format(w=ws)


def _sample_spell(rng: random.Random) -> str:
    w = rng.choice(ITEMS + tuple(_OPP))
    return rng.choice(("spell {w}", "spell the word {w}")).format(w=w)


_SAMPLERS: dict[str, Callable[[random.Random], str]] = {
    "count": _sample_count,
    "list": _sample_list,
    "sort": _sample_sort,
    "repeat": _sample_repeat,
    "add": _sample_add,
    "opposite": _sample_opposite,
    "reverse": _sample_reverse,
    "spell": _sample_spell,
}

_PARSERS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("count", re.compile(r"^count (?:(up|down) )?from (\d+) to (\d+)$")),
    ("list", re.compile(r"^(?:list|name|give me) (two|three|four|five) (colors|animals|fruits)$")),
    ("sort", re.compile(r"^(?:sort|sort these words|put in order): ([a-z ]+)$")),
    ("repeat", re.compile(r"^(?:repeat|say) ([a-z]+) (\d+) times$")),
    ("add", re.compile(r"^(?:add (\d+) and (\d+)|what is (\d+) plus (\d+)|sum of (\d+) and (\d+))$")),
    ("opposite", re.compile(r"^(?:what is the opposite of|opposite of|give the opposite of) ([a-z]+)$")),
    ("reverse", re.compile(r"^(?:reverse|reverse the order): ([a-z ]+)$")),
    ("spell", re.compile(r"^spell (?:the word )?([a-z]+)$")),
)


def parse_prompt(prompt: str) -> Gold:
    """The expected answer of a grammar prompt; ValueError for text outside the grammar."""
    p = prompt.strip().lower()
    for family, rx in _PARSERS:
        m = rx.match(p)
        if m is None:
            continue
        g = [x for x in m.groups() if x is not None]
        if family == "count":
            a, b = int(g[-2]), int(g[-1])
            return Gold(family, _count_seq(a, b))
        if family == "list":
            pool = CATEGORIES[g[1]]
            return Gold(family, pool[: NUMBER_WORDS[g[0]]], frozenset(pool))
        if family == "sort":
            return Gold(family, tuple(sorted(g[0].split())))
        if family == "repeat":
            return Gold(family, (g[0],) * int(g[1]))
        if family == "add":
            return Gold(family, (str(int(g[0]) + int(g[1])),))
        if family == "opposite" and g[0] in _OPP:
            return Gold(family, (_OPP[g[0]],))
        if family == "reverse":
            return Gold(family, tuple(reversed(g[0].split())))
        if family == "spell":
            return Gold(family, tuple(g[0]))
    raise ValueError(f"prompt is not in the synthetic task grammar: {prompt!r}")


def family_of(prompt: str) -> str:
    return parse_prompt(prompt).family


def sample_prompt(rng: random.Random, family: str | None = None) -> str:
    return _SAMPLERS[family or rng.choice(FAMILIES)](rng)


def is_heldout(prompt: str, seed: int, fraction: float = 0.2) -> bool:
    """Stable hash split: the same prompt is always on the same side for a given seed."""
    h = int.from_bytes(hashlib.sha256(f"{seed}|{prompt}".encode()).digest()[:8], "big")
    return h / 2.0**64 < fraction


def sample_prompts(n: int, seed: int, split: str, heldout_fraction: float = 0.2) -> list[str]:
    """`n` distinct prompts of one split ("train" | "heldout"), families balanced while they last."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    want_heldout = split == "heldout"
    rng = random.Random(f"{seed}:{split}")
    seen: set[str] = set()
    out: list[str] = []
    families = list(FAMILIES)
    misses = dict.fromkeys(FAMILIES, 0)
    while len(out) < n and families:
        fam = families[len(out) % len(families)]
        p = sample_prompt(rng, fam)
        if p in seen or is_heldout(p, seed, heldout_fraction) != want_heldout:
            misses[fam] += 1
            if misses[fam] > 500:  # this family's side of the split is exhausted
                families.remove(fam)
            continue
        misses[fam] = 0
        seen.add(p)
        out.append(p)
    if len(out) < n:
        raise ValueError(f"the grammar has fewer than {n} distinct {split} prompts (found {len(out)})")
    return out


def make_splits(
    num_train: int, num_heldout: int, seed: int, heldout_fraction: float = 0.2
) -> tuple[list[str], list[str]]:
    """Disjoint train and held-out prompt lists (held-out prompts never appear in training)."""
    return (
        sample_prompts(num_train, seed, "train", heldout_fraction),
        sample_prompts(num_heldout, seed, "heldout", heldout_fraction),
    )


# ------------------------------------------------------------------------------------------------ gold reward
def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def _adjacent_repeats(ws: Sequence[str]) -> int:
    return sum(1 for i in range(1, len(ws)) if ws[i] == ws[i - 1])


def _grade(match: float) -> int:
    return int(math.floor(4 * match + 1e-9))


_GRAMMAR_WORDS = frozenset(
    set(ITEMS)
    | set(_OPP)
    | set(NUMBER_WORDS)
    | set(CATEGORIES)
    | set(_LETTERS)
    | FILLER
    | set(
        "count up down from to list name give me sort these words put in order repeat say times add and what "
        "plus sum opposite reverse spell word".split()
    )
)


def _known(w: str) -> bool:
    return w.isdigit() or w in _GRAMMAR_WORDS


def gold_attributes(prompt: str, response: str) -> dict[str, int]:
    """The five HelpSteer2 attributes (integers 0-4) of `response` to `prompt` (rules in the module docstring)."""
    gold = parse_prompt(prompt)
    ws = words(response)
    if not ws:
        return dict.fromkeys(ATTRIBUTES, 0)
    content = [w for w in ws if w not in FILLER]
    n = len(gold.tokens)
    if gold.pool is not None:
        good = len({w for w in content if w in gold.pool})
        match = min(good, n) / max(len(content), n)
    else:
        match = _lcs(content, gold.tokens) / max(len(content), n)
    correctness = _grade(match)
    garbage = sum(1 for w in ws if not _known(w))
    loops = max(0, _adjacent_repeats(ws) - _adjacent_repeats(gold.tokens))
    extra = len(ws) - n
    verbosity = 2 + int(math.copysign(min(2, math.ceil(abs(extra) / 2)), extra)) if extra else 2
    helpfulness = max(0, correctness - (verbosity == 4) - (loops > 0))
    return {
        "helpfulness": helpfulness,
        "correctness": correctness,
        "coherence": max(0, 4 - garbage - loops),
        "complexity": min(4, len(set(content)) // 2),
        "verbosity": verbosity,
    }


def gold_score(prompt: str, response: str, weights: Mapping[str, float] = DEFAULT_ATTRIBUTE_WEIGHTS) -> float:
    """Gold reward in [0, 1]: the attributes combined as HelpSteer2 scores are (una_hpc.data.helpsteer)."""
    return combine_attributes(gold_attributes(prompt, response), weights)


def gold_rewards(prompts: Sequence[str | list[dict[str, str]]], responses: Sequence[str]) -> list[float] | None:
    """The eval.gold_reward hook: gold_score of each (prompt, response), or None when a prompt is not the task's.
    A message-list prompt is read by its last message."""
    texts = [p if isinstance(p, str) else p[-1]["content"] for p in prompts]
    try:
        for t in set(texts):
            parse_prompt(t)
    except ValueError:
        return None
    return [gold_score(t, r) for t, r in zip(texts, responses)] if texts else None


# ----------------------------------------------------------------------------------------- response generators
def _answer(gold: Gold, rng: random.Random) -> list[str]:
    if gold.pool is not None:
        return rng.sample(sorted(gold.pool), len(gold.tokens))
    return list(gold.tokens)


def _wrong(gold: Gold, rng: random.Random) -> list[str]:
    """The answer with one plausible mistake (an element wrong, missing, extra or out of order)."""
    ans = _answer(gold, rng)
    if gold.family == "add":
        return [str(max(0, int(ans[0]) + rng.choice((-2, -1, 1, 2))))]
    if gold.family == "opposite":
        return [rng.choice(sorted(set(_OPP) - {ans[0]}))]
    if gold.family == "repeat":
        return ans[:-1] if len(ans) > 2 and rng.random() < 0.5 else ans + ans[:1]
    if gold.family == "count":
        last = int(ans[-1]) + (int(ans[-1]) - int(ans[-2]))
        return ans[:-1] if rng.random() < 0.5 else ans + [str(max(0, last))]
    if gold.family == "list":
        others = sorted(set(ITEMS) - gold.pool)
        ans[rng.randrange(len(ans))] = rng.choice(others)
        return ans
    if gold.family in ("sort", "reverse"):
        i = rng.randrange(len(ans) - 1)
        ans[i], ans[i + 1] = ans[i + 1], ans[i]
        return ans
    i = rng.randrange(len(ans))  # spell: drop or double a letter
    return ans[:i] + ans[i + 1 :] if rng.random() < 0.5 else ans[:i] + [ans[i]] + ans[i:]


def _garble(w: str, rng: random.Random) -> str:
    if w.isdigit():
        return w + rng.choice("xyz")
    i = rng.randrange(len(w))
    return w[:i] + w[i] + w[i:] if len(w) > 1 else w + rng.choice("xyz") + w


def make_response(prompt: str, quality: str, rng: random.Random) -> str:
    """One response to `prompt` of the given quality (see QUALITIES)."""
    gold = parse_prompt(prompt)
    if quality == "correct":
        ans = " ".join(_answer(gold, rng))
        return f"answer: {ans}" if rng.random() < 0.25 else ans
    if quality == "verbose":
        ans = " ".join(_answer(gold, rng))
        return f"{rng.choice(INTROS)} {ans}. {rng.choice(OUTROS)}".strip()
    if quality == "wrong":
        return " ".join(_wrong(gold, rng))
    if quality == "offtopic":
        other = sample_prompt(rng, rng.choice([f for f in FAMILIES if f != gold.family]))
        return " ".join(_answer(parse_prompt(other), rng))
    if quality == "repetitive":
        ans = _answer(gold, rng)
        return " ".join(ans + [ans[-1]] * rng.randint(3, 6))
    if quality == "garbled":
        ans = _answer(gold, rng)
        i = rng.randrange(len(ans))
        ans[i] = _garble(ans[i], rng)
        return " ".join(ans)
    raise ValueError(f"unknown quality {quality!r}; valid: {', '.join(QUALITIES)}")


def sample_response(prompt: str, rng: random.Random, mix: Mapping[str, float] = DEFAULT_SFT_MIX) -> tuple[str, str]:
    """(quality, response) with the quality drawn from `mix`."""
    names = sorted(mix)
    quality = rng.choices(names, weights=[mix[k] for k in names])[0]
    return quality, make_response(prompt, quality, rng)


def sft_examples(
    prompts: Sequence[str], n: int, seed: int, mix: Mapping[str, float] = DEFAULT_SFT_MIX
) -> list[tuple[str, str]]:
    """`n` (prompt, response) SFT pairs with responses of mixed quality; the task family is drawn uniformly, then a
    prompt of that family from `prompts` (small families are not drowned by large ones)."""
    rng = random.Random(f"{seed}:sft")
    by_family: dict[str, list[str]] = {}
    for p in prompts:
        by_family.setdefault(family_of(p), []).append(p)
    groups = [by_family[f] for f in FAMILIES if f in by_family]
    return [(p, sample_response(p, rng, mix)[1]) for p in (rng.choice(rng.choice(groups)) for _ in range(n))]


if __name__ == "__main__":
    _rng = random.Random(0)
    for _p in sample_prompts(8, seed=0, split="train"):
        print(f"\n{_p}")
        for _q in QUALITIES:
            _r = make_response(_p, _q, _rng)
            print(f"  {_q:<10} {gold_score(_p, _r):.3f} {gold_attributes(_p, _r)}  {_r!r}")
