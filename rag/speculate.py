"""Prompt-lookup speculation: answers from retrieved sources copy them, so the tokens that
followed the last place the sequence's latest few tokens appeared (in the prompt or the answer
so far) are a cheap guess of what comes next. The guess is checked in the same forward as the
sequence's next token: one pass over 1 + k positions, the longest prefix of the guess that
greedy decoding would have produced is kept, plus the token after it. Greedy output is token
for token what plain decoding gives (tests/test_speculate.py); only greedy requests without a
repetition penalty speculate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_NGRAM = 3  # the longest tail looked up; shorter ones are tried when it is not found


@dataclass
class Lookup:
    """Where each n-gram (n <= MAX_NGRAM) of a token list last started, kept up to date as tokens
    are appended: a proposal costs a few dictionary reads, not a scan of a 30K-token prompt."""

    seen: dict[tuple[int, ...], int] = field(default_factory=dict)
    indexed: int = 0  # n-grams ending before this position are in `seen`

    def propose(self, tokens: list[int], k: int) -> list[int]:
        """Up to `k` tokens that followed the latest earlier start of the longest tail of `tokens`."""
        if k <= 0:
            return []
        self._catch_up(tokens)
        for n in range(min(MAX_NGRAM, len(tokens) - 1), 0, -1):
            start = self.seen.get(tuple(tokens[-n:]))
            if start is not None:
                return tokens[start + n:start + n + k]
        return []

    def _catch_up(self, tokens: list[int]) -> None:
        """Index the n-grams that end before the last token (the tail itself must not find itself)."""
        end = len(tokens) - 1
        for stop in range(max(self.indexed, 1), end + 1):
            for n in range(1, MAX_NGRAM + 1):
                if stop - n >= 0:
                    self.seen[tuple(tokens[stop - n:stop])] = stop - n
        self.indexed = max(self.indexed, end + 1)


def eligible(params) -> bool:
    """Greedy without a repetition penalty: the only sampling whose verification is exact."""
    return params.temperature == 0 and params.repetition_penalty == 1.0


def accept(draft: list[int], greedy: list[int]) -> list[int]:
    """The tokens a step gives: the draft's prefix that matches greedy decoding, then greedy's
    next token. `greedy[i]` is the argmax after the sequence's last token and draft[:i]."""
    a = 0
    while a < len(draft) and draft[a] == greedy[a]:
        a += 1
    return draft[:a] + [greedy[a]]
