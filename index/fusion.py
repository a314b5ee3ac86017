"""Fusing ranked lists of chunk ids from BM25 and vectors.

- `rrf`: reciprocal rank fusion, sum of w / (k + rank); ignores scores.
- `weighted`: each list's scores min-max scaled to [0, 1] over its candidates, then a weighted sum.
- `calibrated`: each score put on an absolute scale before a weighted sum: BM25 as a fraction of
  the most the query could score, cosine as its lift over the query's background similarity to
  random chunks. A retriever that finds only weak evidence (BM25 matching just common words, an
  encoder that does not know the language) then moves the ranking little: the fusion adapts per
  query instead of trusting both lists' ranks equally as RRF does.
"""

from __future__ import annotations

import numpy as np

METHODS = ("rrf", "weighted", "calibrated")


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


def calibrated(bm25: tuple[np.ndarray, np.ndarray], bm25_max: float,
               vector: tuple[np.ndarray, np.ndarray], background: float, weight: float) -> dict[int, float]:
    fused: dict[int, float] = {}
    if bm25_max > 0:
        for cid, s in zip(bm25[0].tolist(), (bm25[1] / bm25_max).tolist()):
            fused[cid] = (1 - weight) * s
    lift = (vector[1] - background) / max(1 - background, 1e-6)
    for cid, s in zip(vector[0].tolist(), np.clip(lift, 0, None).tolist()):
        fused[cid] = fused.get(cid, 0.0) + weight * s
    return fused
