"""Reward functions named by tests as `rollout.reward_fn=reward_fns:NAME` (tests/ is on sys.path in pytest; the
integration tests put it on PYTHONPATH for the CLI)."""

from __future__ import annotations


def cat_fraction(prompts: list, completions: list[str]) -> list[float]:
    """Fraction of a completion's words that are "cat": in [0, 1], and the tiny models can learn it."""
    return [sum(w == "cat" for w in c.split()) / max(len(c.split()), 1) for c in completions]


def echo_lengths(prompts: list, completions: list[str]) -> list[float]:
    """len(prompt text) + len(completion), so a test can tell prompts and completions both arrived in order."""
    text = [p if isinstance(p, str) else " ".join(m["content"] for m in p) for p in prompts]
    return [len(p) + len(c) for p, c in zip(text, completions)]


def wrong_length(prompts: list, completions: list[str]) -> list[float]:
    return [0.0] * (len(completions) + 1)


def not_finite(prompts: list, completions: list[str]) -> list[float]:
    return [float("nan")] * len(completions)


def verifiable_logged(prompts: list, completions: list[str]) -> list[float]:
    """The verifiable task's gold reward (una_hpc.task.verifiable), each call appended as one JSON line to the file
    named by $REWARD_LOG, so that a test can recompute a run's rewards from the texts the engine produced."""
    import json
    import os

    from una_hpc.task.verifiable import gold_reward_batch

    rewards = gold_reward_batch(prompts, completions)
    if rewards is None:
        raise ValueError("a prompt is not one of the verifiable task's")
    with open(os.environ["REWARD_LOG"], "a") as f:
        f.write(json.dumps({"prompts": prompts, "completions": completions, "rewards": rewards}) + "\n")
    return rewards


def completion_chars(prompts: list, completions: list[str]) -> list[float]:
    """Characters per completion / 10: varies between a prompt's samples, so group normalization has signal."""
    return [len(c) / 10 for c in completions]
