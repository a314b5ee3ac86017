"""Two refinements of a ranked list: quoted phrases, and results spread over documents.

- A query's "quoted phrases" must appear in a hit's text, as written up to case, accents and
  spacing (`"write-ahead log"` needs those words in that order, the hyphen included); the rest of
  the query ranks as usual. Hits are drawn from a deeper candidate list (PHRASE_POOL) so that
  filtering leaves enough.
- A document's second and later chunks have their score multiplied by SAME_DOC each, so one
  long file does not fill the first results when another document scores close to it; a chunk far
  ahead of the others keeps its place.
"""

from __future__ import annotations

import re
from dataclasses import replace

from kb.index.analyzer import fold
from kb.index.search.results import Hit

PHRASE_POOL = 200  # candidates searched for hits holding the phrases
DIVERSITY_POOL = 3  # times k: candidates reordered by spreading over documents
SAME_DOC = 0.8

_QUOTED = re.compile(r'"([^"]+)"|\u201c([^\u201d]+)\u201d')


def phrases(query: str) -> list[str]:
    """The query's quoted phrases, normalised (folded, single-spaced); those of one word too."""
    return [p for p in (_norm(a or b) for a, b in _QUOTED.findall(query)) if p]


def with_phrases(hits: list[Hit], wanted: list[str]) -> list[Hit]:
    """The hits whose text holds every phrase of `wanted` (all of them when none is wanted)."""
    if not wanted:
        return hits
    return [h for h, text in ((h, _norm(h.text)) for h in hits) if all(p in text for p in wanted)]


def pool(k: int, wanted: list[str]) -> int:
    """How many ranked candidates to read for `k` results: enough to spread over documents, and
    with phrases to wanted, PHRASE_POOL at least."""
    return max(k * DIVERSITY_POOL, PHRASE_POOL if wanted else 0)


def spread(hits: list[Hit], k: int) -> list[Hit]:
    """The `k` best of `hits` (best first) after SAME_DOC per earlier chunk of the same document,
    with those scores (the best hit keeps its own), ranks numbered again."""
    seen: dict[tuple[str, str], int] = {}
    scored = []
    for i, h in enumerate(hits):
        n = seen.get((h.root, h.path), 0)
        seen[(h.root, h.path)] = n + 1
        scored.append((h.score * SAME_DOC ** n, -i, h))
    scored.sort(key=lambda t: (t[0], t[1]), reverse=True)
    return [replace(h, rank=r, score=round(s, 6)) for r, (s, _, h) in enumerate(scored[:k], 1)]


def _norm(text: str) -> str:
    return " ".join(fold(text).split())
