"""Checking an answer's citations against the sources it was given.

Small models state the right fact and then cite the wrong number (often [1] by habit), or none.
kb does not trust the markers alone: each sentence of the answer is matched to the sources by
the BM25 terms they share, weighted by how rare each term is among the sources. A sentence's own
marker [n] stands when source n supports it nearly as well as the best source does; otherwise,
or when it has none, the sentence is attributed to the best-supporting source if that source
holds most of its weight. The answer's text is left exactly as the model wrote it: the checked
list is `cited`, the model's own markers `model_cited`. A sentence that shares no term with any
source cites nothing, whatever its marker says.
"""

from __future__ import annotations

import math
import re
from collections import Counter

CITE = re.compile(r"\[(\d+)\]")
SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
TRAILING = re.compile(r"([.!?])\s*((?:\[\d+\]\s*)+)")
KEEP = 0.9  # a marker stands if its source has this share of the best source's support
ATTRIBUTE = 0.5  # a sentence is attributed only to a source holding this share of its weight


def model_citations(text: str, n_sources: int) -> list[int]:
    return sorted({int(n) for n in CITE.findall(text) if 1 <= int(n) <= n_sources})


def check(text: str, sources: list[str]) -> list[int]:
    """The source numbers (1-based) that the answer's sentences rest on."""
    from kb.index.analyzer import analyze

    terms = [set(analyze(s)) for s in sources]
    df = Counter(t for ts in terms for t in ts)
    cited: set[int] = set()
    text = TRAILING.sub(r" \2\1", text)  # "... started. [1]" cites the sentence before it
    for sentence in SENTENCE.split(text):
        marks = model_citations(sentence, len(sources))
        words = set(analyze(CITE.sub(" ", sentence)))
        if not words & df.keys():
            continue  # shares nothing with any source (a guess, or the prompt's example): no citation
        # rare among the sources weighs more; a word in none of them counts as rare, against all
        weight = {t: math.log(1 + len(sources) / max(df[t], 1)) for t in words}
        total = sum(weight.values())
        support = [sum(w for t, w in weight.items() if t in ts) / total for ts in terms]
        best = max(support)
        kept = [n for n in marks if support[n - 1] >= KEEP * best]
        if kept:
            cited.update(kept)
        elif best >= ATTRIBUTE:
            cited.add(support.index(best) + 1)
    return sorted(cited)
