"""Which retrieved passages become the prompt's sources: whether a question is worth asking the
model at all (`relevant`), then those passages that fit the prompt's budget, neighbours of a file
joined into one source, numbered best first (`pack`).

When the best passage scores below `min_score`, kb declines without asking the model: small
models answer from their own guesses otherwise. The threshold is calibrated on collections of 1,
3, 30, 38 and 10,000 documents (`python bench/ask.py --only decline --big 10000`, README); in a
small store the vectors' background is topped up with generic passages (kb.index.background) so
that the score means the same from one document up.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from kb.errors import UsageError

# The best hybrid score below which kb declines (calibrated fusion's scale; README, kb ask).
MIN_SCORE = 0.25
SOURCE_FLOOR = 0.5  # passages scoring under this share of MIN_SCORE are noise: not given to the model


@dataclass
class Source:
    n: int
    path: str
    start_line: int
    end_line: int
    score: float
    text: str
    chunk_ids: list[int]  # the passages it is made of
    root: str = ""  # the folder it was indexed under
    context: str = ""  # its collection's one-line context (kb.index.collections), shown to the model

    def to_json(self) -> dict:
        return {"n": self.n, "path": self.path, "start_line": self.start_line, "end_line": self.end_line,
                "score": round(self.score, 4)}


def relevant(hits, min_score: float = MIN_SCORE) -> bool:
    """Whether a search's hits (best first) are worth giving the model: the best scores at least
    `min_score`. The scale holds from a one-document store up (the vectors' background is topped up
    with generic passages in small stores, kb.index.background; README, kb ask)."""
    return bool(hits) and hits[0].score >= min_score


def pack(hits, cost: Callable[[object], int], budget: int, fixed: int, floor: float) -> list[Source]:
    """The sources of a prompt of `budget` tokens whose other parts take `fixed`: hits (best
    first) scoring at least `floor`, each taken while its `cost` in tokens fits, merged with their
    neighbours, numbered best first. UsageError if not one fits."""
    chosen, used = [], fixed
    for h in (h for h in hits if h.score >= floor):
        c = cost(h)
        if used + c > budget:
            continue
        chosen.append(h)
        used += c
    if not chosen:
        raise UsageError(f"--context-tokens {budget} leaves no room for one source")
    # Neighbouring passages are joined in (path, line) order, then the sources go best first:
    # a small model leans on the first source. The order is a function of the retrieval, so a
    # question asked again has the same prompt, and its KV comes back from the prefix cache.
    chosen.sort(key=lambda h: (h.path, h.start_line))
    merged = sorted(_merge(chosen), key=lambda s: (-s.score, s.path, s.start_line))
    return [replace(s, n=n) for n, s in enumerate(merged, 1)]


def _merge(hits) -> list[Source]:
    """Sources from hits in (path, line) order, neighbouring passages of a file joined into one
    (the model reads the section whole; one citation number for it)."""
    out: list[Source] = []
    for h in hits:
        last = out[-1] if out else None
        if last is not None and last.path == h.path and h.start_line <= last.end_line + 2:
            last.text, last.end_line = last.text.rstrip() + "\n\n" + h.text.strip(), max(last.end_line, h.end_line)
            last.score, last.chunk_ids = max(last.score, h.score), last.chunk_ids + [h.chunk_id]
            continue
        out.append(Source(len(out) + 1, h.path, h.start_line, h.end_line, h.score, h.text, [h.chunk_id], h.root))
    return out
