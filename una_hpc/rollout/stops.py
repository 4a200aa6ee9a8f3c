"""Stop strings (rollout.stop): where a completion is cut, one rule for both engines.

    scanner = StopScanner(tokenizer, ["\\n\\n", "Question:"], prompt_ids)
    for t, tok in enumerate(completion_ids):
        if scanner.step(tok):
            keep = t + 1          # the completion ends with the token that completes the stop string

The rule: the completion's text is decoded token by token in the context of its prompt (special tokens skipped),
exactly as vLLM's incremental detokenizer does (`tokenizers.decoders.DecodeStream` primed with the prompt ids: bytes
of an unfinished UTF-8 character are held back until the character is complete); the completion is cut after the
first token at which that text contains a stop string. The cut is at a token boundary:
the completing token is kept whole (its text may run past the stop string), nothing after it, and the completion
counts as finished (finish reason "stop", like EOS). vLLM stops by the same rule; both engines still apply
`stop_cut` to what they sampled, so they cut in the same place by construction. A slow (Python) tokenizer has no
DecodeStream: the text is then the full decode of prompt + completion minus the prompt's.

Tested by: .venv/bin/python -m pytest tests/unit/test_rollout_features.py -q
"""

from __future__ import annotations

from collections.abc import Sequence


class StopScanner:
    """Feeds one completion's tokens; `step` says when the text so far contains a stop string."""

    def __init__(self, tokenizer, stops: Sequence[str], prompt_ids: Sequence[int]) -> None:
        if not stops or any(not s for s in stops):
            raise ValueError(f"stop strings must be non-empty, got {list(stops)!r}")
        self.stops = list(stops)
        self._lookback = max(len(s) for s in self.stops) - 1
        self.text = ""
        self.matched: str | None = None
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            from tokenizers.decoders import DecodeStream

            self._backend = backend
            self._stream = DecodeStream(ids=list(prompt_ids), skip_special_tokens=True)
        else:
            self._tokenizer, self._ids = tokenizer, list(prompt_ids)
            self._prompt_text = tokenizer.decode(self._ids, skip_special_tokens=True)
            self._stream = None

    def _next_text(self, token: int) -> str:
        if self._stream is not None:
            return self._stream.step(self._backend, int(token)) or ""
        self._ids.append(int(token))
        full = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        if full.endswith("\ufffd"):  # an incomplete UTF-8 sequence is no text yet (as DecodeStream holds it back)
            return ""
        return full[len(self._prompt_text) + len(self.text) :]

    def step(self, token: int) -> bool:
        """Add one token; True once a stop string occurs in the text (and from then on)."""
        if self.matched is not None:
            return True
        chunk = self._next_text(token)
        if not chunk:
            return False
        self.text += chunk
        window = self.text[-(len(chunk) + self._lookback) :]  # a new match must end in the new chunk
        found = [(window.find(s) + len(s), s) for s in self.stops if s in window]
        if found:
            self.matched = min(found)[1]  # the stop string that completes first
        return self.matched is not None


def stop_cut(tokenizer, stops: Sequence[str], prompt_ids: Sequence[int], completion_ids: Sequence[int]) -> int | None:
    """How many completion tokens to keep under the stop strings (see the module docstring); None: no stop string
    occurs."""
    if not stops:
        return None
    scanner = StopScanner(tokenizer, stops, prompt_ids)
    for t, token in enumerate(completion_ids):
        if scanner.step(token):
            return t + 1
    return None
