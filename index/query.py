"""`kb query`: retrieve the best chunks for a text. A `Searcher` stays warm across queries (for
`--file`, evaluations and benchmarks); it reloads the BM25 cache when the store's data version moves.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from kb.errors import StoreIncompatible, UsageError
from kb.index.analyzer import analyze_query
from kb.index.bm25 import Bm25Cache, top_k
from kb.index.store import Store

MODES = ("bm25", "vector", "hybrid")


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    path: str  # relative to the folder given to `kb index`
    start_line: int
    end_line: int
    heading: str
    text: str
    root: str
    chunk_id: int


@dataclass
class QueryResult:
    query: str
    mode: str
    results: list[Hit]
    timings_ms: dict[str, float] = field(default_factory=dict)
    note: str | None = None  # e.g. why hybrid fell back to bm25
    terms: list[str] = field(default_factory=list)  # the query's indexed terms (for highlighting)

    def to_json(self) -> dict:
        out = {"query": self.query, "mode": self.mode,
               "results": [{k: v for k, v in asdict(h).items() if k != "chunk_id"} for h in self.results],
               "timings_ms": self.timings_ms}
        if self.note:
            out["note"] = self.note
        return out


class Searcher:
    def __init__(self, store: Store):
        self.store = store
        self._bm25: Bm25Cache | None = None
        self._globs: dict[tuple[str, int], np.ndarray] = {}

    def bm25(self) -> Bm25Cache:
        version = self.store.data_version
        if self._bm25 is None or self._bm25.version != version:
            self._bm25 = Bm25Cache.current(self.store)
        return self._bm25

    def search(self, query: str, k: int = 10, mode: str = "hybrid",
               path_glob: str | None = None) -> QueryResult:
        query = query.strip()
        if not query:
            raise UsageError("empty query")
        if k < 1:
            raise UsageError("-k must be at least 1")
        if mode not in MODES:
            raise UsageError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
        note = None
        if mode == "vector":
            raise StoreIncompatible("this store has no vectors yet; use --mode bm25")
        if mode == "hybrid":
            mode, note = "bm25", "no vectors in this store: hybrid fell back to bm25"
        t0 = time.perf_counter()
        ids: dict[str, int] = {}
        terms = analyze_query(query, lambda ts: self._known(ts, ids))
        t1 = time.perf_counter()
        cache = self.bm25()
        scores = cache.scores([ids[t] for t in terms if t in ids])
        if path_glob:
            scores = np.where(self._glob_mask(cache, path_glob), scores, 0.0)
        rows = top_k(scores, k)
        t2 = time.perf_counter()
        hits = self._fetch(cache.chunk_ids[rows].tolist(), scores[rows].tolist())
        t3 = time.perf_counter()
        timings = {"analyze": t1 - t0, "bm25": t2 - t1, "fetch": t3 - t2, "total": t3 - t0}
        return QueryResult(query, mode, hits, {n: round(s * 1000, 3) for n, s in timings.items()},
                           note, [t for t in terms if t in ids])

    def _known(self, terms: list[str], ids: dict[str, int]) -> list[str]:
        """The terms that are in the index, recording their ids in `ids`."""
        if not terms:
            return []
        marks = ",".join("?" * len(terms))
        found = dict(self.store.conn.execute(
            f"SELECT term, id FROM terms WHERE term IN ({marks})", terms))
        ids.update(found)
        return [t for t in terms if t in found]

    def _glob_mask(self, cache: Bm25Cache, glob: str) -> np.ndarray:
        """Chunks whose document path, relative to its indexed folder, matches the SQLite GLOB."""
        key = (glob, cache.version)
        if key not in self._globs:
            ids = [r[0] for r in self.store.conn.execute(
                "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.doc_id "
                "WHERE substr(d.path, length(d.root) + 2) GLOB ?", (glob,))]
            self._globs[key] = np.isin(cache.chunk_ids, np.array(ids, dtype=np.int64))
        return self._globs[key]

    def _fetch(self, chunk_ids: list[int], scores: list[float]) -> list[Hit]:
        if not chunk_ids:
            return []
        marks = ",".join("?" * len(chunk_ids))
        rows = {r[0]: r for r in self.store.conn.execute(
            "SELECT c.id, d.path, d.root, c.start_line, c.end_line, c.heading, c.text "
            f"FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE c.id IN ({marks})", chunk_ids)}
        hits = []
        for chunk_id, score in zip(chunk_ids, scores):
            if chunk_id not in rows:  # deleted by a concurrent index run since the cache was read
                continue
            _, path, root, start, end, heading, text = rows[chunk_id]
            hits.append(Hit(len(hits) + 1, round(score, 6), os.path.relpath(path, root),
                            start, end, heading, text, root, chunk_id))
        return hits
