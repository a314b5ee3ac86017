"""Fusing ranked lists of chunk ids from BM25 and vectors.

- `rrf`: reciprocal rank fusion, sum of w / (k + rank); ignores scores.
- `weighted`: each list's scores min-max scaled to [0, 1] over its candidates, then a weighted sum.
- `calibrated`: each score put on an absolute scale before a weighted sum: BM25 as a fraction of
  the most the query could score, cosine as its lift over the query's background similarity to
  random chunks. A retriever that finds only weak evidence (BM25 matching just common words, an
  encoder that does not know the language) then moves the ranking little: the fusion adapts per
  query instead of trusting both lists' ranks equally as RRF does.
  The vectors' vote is further scaled by how far the best hit stands out from the query's
  background, in standard deviations of it (`vector_confidence`). An encoder that does not know a
  collection's language puts every chunk at about the same distance from the query: measured with
  English all-MiniLM-L6-v2, the best hit stands a median 2.1 deviations out on French text and 4.6
  to 4.9 on English (README). Below Z_LOW the vectors' vote is dropped, above Z_HIGH it counts fully.
  And it is scaled by the query's shape: a query written as keywords, without a single function
  word of English, French, German or Spanish ("sqlite wal checkpoint"), asks for those words, and
  BM25 finds them; a query written as a sentence ("how do I make sqlite checkpoint its log") asks
  for a meaning. A keyword-style query whose words BM25 finds together (its best hit scores at least BM25_FOUND of what the query
  could score) gives the vectors only KEYWORD_SHARE of their weight; one whose words BM25 barely
  finds ("making cutlery keen again", a paraphrase) keeps it all, with a ramp between. Measured:
  bench/retrieval.py's keyword queries have their best BM25 hit at 0.32 or more of the maximum in
  95 % of cases, sample_corpus's paraphrases written as keywords at 0.21 or less (README).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import numpy as np

from kb.index.analyzer import STOP_WORDS, fold
from kb.index.search import language

if TYPE_CHECKING:
    from kb.index.search.results import Candidates
    from kb.index.store import Store

METHODS = ("rrf", "weighted", "calibrated")
DEFAULT_FUSION = ("calibrated", 0.5)  # method, vector weight: measured best on sample_corpus (README)


def rrf(lists: list[np.ndarray], weights: list[float], k: int = 60) -> dict[int, float]:
    fused: dict[int, float] = {}
    for ids, w in zip(lists, weights):
        for rank, cid in enumerate(ids.tolist(), 1):
            fused[cid] = fused.get(cid, 0.0) + w / (k + rank)
    return fused


def weighted(lists: list[tuple[np.ndarray, np.ndarray]], weights: list[float]) -> dict[int, float]:
    """Min-max normalise each list over its own candidates, then sum with weights."""
    fused: dict[int, float] = {}
    for (ids, scores), w in zip(lists, weights):
        if len(ids) == 0:
            continue
        lo, hi = float(scores.min()), float(scores.max())
        norm = (scores - lo) / (hi - lo) if hi > lo else np.ones_like(scores)
        for cid, s in zip(ids.tolist(), norm.tolist()):
            fused[cid] = fused.get(cid, 0.0) + w * s
    return fused


def top(fused: dict[int, float], k: int) -> list[tuple[int, float]]:
    return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


Z_LOW, Z_HIGH = 1.5, 4.0
KEYWORD_SHARE = 0.4
BM25_FOUND = (0.15, 0.3)  # the ramp: from no reduction to all of it
_WORD = re.compile(r"[^\W_]+")


def keyword_style(query: str) -> bool:
    """True for a query of content words only: none of the analyzer's stop words, nor a
    function word of the other languages kb tells apart (a French sentence is not keywords)."""
    return not any(w in STOP_WORDS or w in language.ANY_FUNCTION_WORD for w in _WORD.findall(fold(query)))


def vector_confidence(top: float, background: float, spread: float) -> float:
    """In [0, 1]: how clearly the best vector hit stands out from the query's background."""
    if spread <= 0:
        return 1.0  # no background sample to judge by
    z = (top - background) / spread
    return float(np.clip((z - Z_LOW) / (Z_HIGH - Z_LOW), 0.0, 1.0))


def calibrated(bm25: tuple[np.ndarray, np.ndarray], bm25_max: float,
               vector: tuple[np.ndarray, np.ndarray], background: float, weight: float,
               spread: float = 0.0, keywords: bool = False) -> dict[int, float]:
    fused: dict[int, float] = {}
    if keywords and bm25_max > 0 and len(bm25[1]):
        lo, hi = BM25_FOUND
        found = float(np.clip((float(bm25[1][0]) / bm25_max - lo) / (hi - lo), 0.0, 1.0))
        weight *= 1 - (1 - KEYWORD_SHARE) * found
    if len(vector[1]):
        weight *= vector_confidence(float(vector[1][0]), background, spread)
    if bm25_max > 0:
        for cid, s in zip(bm25[0].tolist(), (bm25[1] / bm25_max).tolist()):
            fused[cid] = (1 - weight) * s
    lift = (vector[1] - background) / max(1 - background, 1e-6)
    for cid, s in zip(vector[0].tolist(), np.clip(lift, 0, None).tolist()):
        fused[cid] = fused.get(cid, 0.0) + weight * s
    return fused


def fuse(bm25: Candidates, vector: Candidates, k: int, method: str, weight: float) -> list[tuple[int, float]]:
    """The `k` best (chunk id, fused score) of two retrievers' candidates by `method`, with the
    vectors' share `weight` (BM25's is 1 - weight)."""
    if method == "rrf":
        fused = rrf([bm25.ids, vector.ids], [1 - weight, weight])
    elif method == "weighted":
        fused = weighted([(bm25.ids, bm25.scores), (vector.ids, vector.scores)], [1 - weight, weight])
    else:
        fused = calibrated((bm25.ids, bm25.scores), bm25.ref, (vector.ids, vector.scores),
                           vector.ref, weight, vector.spread, vector.keywords)
    return top(fused, k)


def configured(store: Store, query: str = "") -> tuple[str, float]:
    """The fusion method and vector weight for `query`: what `kb eval --tune --apply` stored for
    its language (kb.index.search.language), else for the store, else the default."""
    raw = store.meta("fusion")
    if not raw:
        return DEFAULT_FUSION
    cfg = json.loads(raw)
    languages = cfg.get("languages") or {}
    if languages and query:
        cfg = languages.get(language.guess(query), cfg)
    return cfg["method"], float(cfg["weight"])


def languages(store: Store) -> dict:
    """The fusion stored per query language, if any."""
    raw = store.meta("fusion")
    return (json.loads(raw).get("languages") or {}) if raw else {}


def settings(store: Store) -> dict:
    """The store's BM25 title weight and fusion: {"title_weight", "method", "weight"[, "languages"]}."""
    from kb.index.bm25 import title_weight

    method, weight = configured(store)
    per_language = languages(store)
    return {"title_weight": title_weight(store), "method": method, "weight": weight,
            **({"languages": per_language} if per_language else {})}


def save(store: Store, method: str, weight: float, languages: dict | None = None) -> None:
    """Make (method, weight) the fusion that `kb query` uses in this store, with `languages`
    ({"fr": {"method": ..., "weight": ...}}) for queries in those languages."""
    cfg = {"method": method, "weight": weight, **({"languages": languages} if languages else {})}
    with store.transaction(data=False):
        store.set_meta("fusion", json.dumps(cfg))
