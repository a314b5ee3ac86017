"""Text analysis for BM25: accent folding, lower-casing, English stop words and Snowball stemming,
and Chinese segmented with jieba. Documents and queries go through the same function.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from functools import lru_cache

# Bump when analysis changes: it is part of the store's fingerprint, so old indexes are detected.
ANALYZER_VERSION = "en-snowball+jieba-search/1"

# Runs of CJK ideographs go to jieba; everything else splits on word characters.
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]+|[^\W_{_CJK}]+")
_CJK_RUN = re.compile(rf"[{_CJK}]")

STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its itself
    just me more most my myself no nor not of off on once only or other our ours ourselves out over
    own same she should so some such than that the their theirs them themselves then there these
    they this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours yourself yourselves""".split()
)


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer  # PyStemmer: the C Snowball stemmers

    return Stemmer.Stemmer("english")


@lru_cache(maxsize=1)
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)  # it announces its dictionary load on stderr otherwise
    jieba.initialize()
    return jieba


def fold(text: str) -> str:
    """Lower-case and strip accents (é -> e, ß -> ss); CJK is unchanged."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def analyze_query(text: str, known) -> list[str]:
    """The distinct terms of a query that are in the index; `known(terms)` returns those that are.

    CJK runs are not segmented with jieba here (its dictionary takes ~0.6 s to load, most of a cold
    query): since documents were cut in jieba's search mode, which emits every dictionary word
    inside a longer word, the indexed substrings of length 2..8 of a query run are the same terms;
    single characters count where no longer term covers them.
    """
    words, runs = [], []
    for match in _TOKEN.finditer(fold(text)):
        token = match.group()
        if _CJK_RUN.match(token):
            runs.append(token)
        elif token not in STOP_WORDS:
            words.append(token)
    terms = known(_stemmer().stemWords(words)) if words else []
    for run in runs:
        grams = {run[i:j]: i for i in range(len(run)) for j in range(i + 2, min(len(run), i + 8) + 1)}
        found = known(list(grams))
        covered = {i for g in found for i in range(grams[g], grams[g] + len(g))}
        terms += sorted(found, key=lambda g: (grams[g], len(g)))
        terms += known([c for i, c in enumerate(run) if i not in covered])
    return list(dict.fromkeys(terms))


def analyze(text: str) -> list[str]:
    """The BM25 terms of `text`, in order, with repeats."""
    words: list[str] = []
    for match in _TOKEN.finditer(fold(text)):
        token = match.group()
        if _CJK_RUN.match(token):
            words.extend(w for w in _jieba().cut_for_search(token) if w.strip())
        elif token not in STOP_WORDS:
            words.append(token)
    if not words:
        return words
    return _stemmer().stemWords(words)
