"""The BM25 retriever: a query's terms looked up, then a row sum over the precomputed score cache
(kb.index.bm25), reloaded when the store's data version moves."""

from __future__ import annotations

import time

import numpy as np

from kb.index.analyzer import analyze_query
from kb.index.bm25 import Bm25Cache, top_k
from kb.index.search.paths import ChunkPaths
from kb.index.search.results import Candidates
from kb.index.store import Store, lookup


class Bm25Retriever:
    def __init__(self, store: Store, paths: ChunkPaths):
        self.store, self.paths = store, paths
        self._cache: Bm25Cache | None = None
        self._title: float | None = None

    def cache(self) -> Bm25Cache:
        """The score cache of the store's current data."""
        version = self.store.data_version
        if self._cache is None or self._cache.version != version:
            self._cache = (Bm25Cache.current(self.store) if self._title is None
                           else Bm25Cache.build(self.store, self._title))
        return self._cache

    def weigh_title(self, weight: float | None) -> None:
        """Score with the title field weighted `weight` (None: the store's), for tuning: the cache
        is then built in memory, not saved."""
        if weight != self._title:
            self._title, self._cache = weight, None

    def candidates(self, query: str, depth: int, scope,
                   timings: dict[str, float]) -> tuple[Candidates, list[str]]:
        """The `depth` best chunks, and the query's terms that the index holds (for highlighting).
        Adds `analyze` and `bm25` seconds to `timings`."""
        t0 = time.perf_counter()
        ids: dict[str, int] = {}
        terms, unknown = analyze_query(query, lambda ts: self._known(ts, ids))
        t1 = time.perf_counter()
        cache = self.cache()
        term_ids = [ids[t] for t in terms if t in ids]
        scores = cache.scores(term_ids)
        if scope:  # a kb.index.search.paths.Scope
            scores = np.where(self.paths.mask(cache.chunk_ids, cache.version, scope), scores, 0.0)
        rows = top_k(scores, depth)
        timings.update(analyze=t1 - t0, bm25=time.perf_counter() - t1)
        return (Candidates(cache.chunk_ids[rows], scores[rows], cache.max_score(term_ids, unknown)),
                [t for t in terms if t in ids])

    def _known(self, terms: list[str], ids: dict[str, int]) -> list[str]:
        """The terms that are in the index, recording their ids in `ids`."""
        found = lookup.term_ids(self.store.conn, list(dict.fromkeys(terms)))
        ids.update(found)
        return [t for t in terms if t in found]
