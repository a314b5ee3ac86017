"""One query against one store: validate, pick the retrievers the mode needs (falling back from
hybrid to BM25 where the store has no usable vectors), fuse, and read the hits' rows.

A `Searcher` stays warm across queries (`--file`, evaluations, benchmarks, `kb ask`): its
retrievers keep the BM25 cache, the encoder and the vector index, and reload what depends on the
data when the store's data version moves.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace

from kb.errors import StoreIncompatible, Unavailable, UsageError
from kb.index.search import exact, fusion
from kb.index.search.bm25 import Bm25Retriever
from kb.index.search.paths import ChunkPaths, Scope
from kb.index.search.results import Candidates, Hit, QueryResult
from kb.index.search.vector import VectorRetriever
from kb.index.store import Store, lookup

MODES = ("bm25", "vector", "hybrid")


@dataclass(frozen=True)
class SearchConfig:
    hybrid_depth: int = 100  # candidates taken from each retriever before fusion
    filter_depth: int = 8  # with --path, this many times the depth of vector neighbours read before filtering
    query_encoder: str = "auto"  # auto | numpy | torch (kb.embed.load_query_encoder)


class Searcher:
    def __init__(self, store: Store, cfg: SearchConfig = SearchConfig()):
        self.store, self.cfg = store, cfg
        self.paths = ChunkPaths(store)
        self.bm25 = Bm25Retriever(store, self.paths)
        self.vector = VectorRetriever(store, cfg.filter_depth, cfg.query_encoder)

    def search(self, query: str, k: int = 10, mode: str = "hybrid",
               path_glob: str | None = None, scope: Scope = Scope()) -> QueryResult:
        """The `k` best chunks for `query` by `mode`, only of documents in `scope` (`path_glob`:
        its path). UsageError for an empty query, k < 1 or an unknown mode;
        StoreIncompatible for vector mode in a store without complete vectors."""
        query = query.strip()
        _validate(query, k, mode)
        scope = replace(scope, path=path_glob) if path_glob else scope
        mode, note = self._usable(mode)
        timings: dict[str, float] = {}
        wanted = exact.phrases(query)
        pool = exact.pool(k, wanted)
        depth = pool if mode != "hybrid" else max(pool, self.cfg.hybrid_depth)
        t0 = time.perf_counter()
        try:
            lists, terms = self._retrieve(query, mode, depth, scope, timings)
        except Unavailable as e:  # the server the store's vectors came from (kb index --embed-backend)
            if mode != "hybrid":
                raise
            mode, note = "bm25", f"{e}: hybrid fell back to bm25"
            lists, terms = self._retrieve(query, mode, depth, scope, timings)
        t1 = time.perf_counter()
        if mode == "hybrid":
            ranked = fusion.fuse(lists["bm25"], lists["vector"], pool, *self.fusion(query))
        else:
            ranked = list(zip(lists[mode].ids[:pool].tolist(), lists[mode].scores[:pool].tolist()))
        hits = exact.spread(exact.with_phrases(self._hits(ranked), wanted), k)
        t2 = time.perf_counter()
        timings.update(fuse_fetch=t2 - t1, total=t2 - t0)
        return QueryResult(query, mode, hits, {n: round(v * 1000, 3) for n, v in timings.items()},
                           note, terms)

    def _usable(self, mode: str) -> tuple[str, str | None]:
        """(the mode to run, a note on why it differs): hybrid falls back to bm25 without vectors."""
        if mode == "bm25" or self.store.meta("embedding") is not None:
            return mode, None
        if self.store.vector_setting() == "none":
            why = ("this store has no vectors (indexed with --vector-index none); run "
                   "`kb index PATH --vector-index auto` to embed it")
        else:
            why = ("this store's vectors are incomplete (a kb index run ended before embedding was "
                   "done); run `kb index` again to complete them")
        if mode == "vector":
            raise StoreIncompatible(why)
        return "bm25", f"{why}: hybrid fell back to bm25"

    def _retrieve(self, query: str, mode: str, depth: int, scope: Scope,
                  timings: dict[str, float]) -> tuple[dict[str, Candidates], list[str]]:
        lists: dict[str, Candidates] = {}
        terms: list[str] = []
        if mode in ("bm25", "hybrid"):
            lists["bm25"], terms = self.bm25.candidates(query, depth, scope, timings)
        if mode in ("vector", "hybrid"):
            allowed = self.paths.matching(scope) if scope else None
            lists["vector"] = self.vector.candidates(query, depth, allowed, timings)
        return lists, terms

    def _hits(self, ranked: list[tuple[int, float]]) -> list[Hit]:
        rows = lookup.hit_rows(self.store.conn, [c for c, _ in ranked])
        hits: list[Hit] = []
        for chunk_id, score in ranked:
            if chunk_id not in rows:  # deleted by a concurrent index run since the cache was read
                continue
            path, root, start, end, heading, text = rows[chunk_id]
            hits.append(Hit(len(hits) + 1, round(score, 6), os.path.relpath(path, root),
                            start, end, heading, text, root, chunk_id))
        return hits

    def fusion(self, query: str = "") -> tuple[str, float]:
        """The store's fusion method and vector weight for `query` (`kb eval --tune --apply` can set them)."""
        return fusion.configured(self.store, query)

    def candidates(self, query: str, depth: int) -> tuple[Candidates, Candidates]:
        """(bm25, vector) candidates before fusion, for tuning it."""
        timings: dict[str, float] = {}
        return (self.bm25.candidates(query, depth, Scope(), timings)[0],
                self.vector.candidates(query, depth, None, timings))

    def fuse_paths(self, bm25: Candidates, vector: Candidates, k: int, method: str, weight: float) -> list[str]:
        """Document paths of a fusion of `candidates`, best first."""
        paths = self.paths.relative()
        return [paths[c] for c, _ in fusion.fuse(bm25, vector, k, method, weight) if c in paths]


def _validate(query: str, k: int, mode: str) -> None:
    if not query:
        raise UsageError("empty query")
    if k < 1:
        raise UsageError("-k must be at least 1")
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")

