"""`kb query`: retrieve the best chunks for a text. A `Searcher` stays warm across queries (for
`--file`, evaluations and benchmarks); it reloads the BM25 cache when the store's data version moves.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from kb.errors import StoreIncompatible, UsageError
from kb.index import fusion
from kb.index.analyzer import analyze_query
from kb.index.bm25 import Bm25Cache, top_k
from kb.index.store import Store

MODES = ("bm25", "vector", "hybrid")
HYBRID_DEPTH = 100  # candidates taken from each retriever before fusion
DEFAULT_FUSION = ("calibrated", 0.5)  # method, vector weight: measured best on sample_corpus (README)


@dataclass(frozen=True)
class Candidates:
    """One retriever's best chunks before fusion, and the reference its scores are read against:
    for BM25 the most the query could score, for vectors the query's background similarity."""

    ids: np.ndarray
    scores: np.ndarray
    ref: float
    spread: float = 0.0  # vectors: the standard deviation of the background similarities
    keywords: bool = False  # the query is keyword-style (fusion.keyword_style)


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
        self._globs: dict[tuple, np.ndarray] = {}
        self._encoder = None
        self._vindex = None
        self._path_map = None
        self._sample = None  # background.Background, with the encoder

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
        if mode != "bm25" and self.store.meta("embedding") is None:
            if self.store.vector_setting() == "none":
                why = ("this store has no vectors (indexed with --vector-index none); run "
                       "`kb index PATH --vector-index auto` to embed it")
            else:
                why = ("this store's vectors are incomplete (a kb index run ended before embedding was "
                       "done); run `kb index` again to complete them")
            if mode == "vector":
                raise StoreIncompatible(why)
            mode, note = "bm25", f"{why}: hybrid fell back to bm25"
        timings: dict[str, float] = {}
        depth = k if mode != "hybrid" else max(k, HYBRID_DEPTH)
        t0 = time.perf_counter()
        lists = {}
        terms: list[str] = []
        if mode in ("bm25", "hybrid"):
            lists["bm25"], terms = self._bm25_list(query, depth, path_glob, timings)
        if mode in ("vector", "hybrid"):
            lists["vector"] = self._vector_list(query, depth, path_glob, timings)
        t1 = time.perf_counter()
        if mode == "hybrid":
            ranked = self._fuse(lists["bm25"], lists["vector"], k)
        else:
            ranked = list(zip(lists[mode].ids[:k].tolist(), lists[mode].scores[:k].tolist()))
        hits = self._fetch([c for c, _ in ranked], [s for _, s in ranked])
        t2 = time.perf_counter()
        timings.update(fuse_fetch=t2 - t1, total=t2 - t0)
        return QueryResult(query, mode, hits, {n: round(v * 1000, 3) for n, v in timings.items()},
                           note, terms)

    def _bm25_list(self, query, depth, path_glob, timings) -> tuple[Candidates, list[str]]:
        t0 = time.perf_counter()
        ids: dict[str, int] = {}
        terms, unknown = analyze_query(query, lambda ts: self._known(ts, ids))
        t1 = time.perf_counter()
        cache = self.bm25()
        term_ids = [ids[t] for t in terms if t in ids]
        scores = cache.scores(term_ids)
        if path_glob:
            scores = np.where(self._glob_mask(cache, path_glob), scores, 0.0)
        rows = top_k(scores, depth)
        timings.update(analyze=t1 - t0, bm25=time.perf_counter() - t1)
        return (Candidates(cache.chunk_ids[rows], scores[rows], cache.max_score(term_ids, unknown)),
                [t for t in terms if t in ids])

    def _vector_list(self, query, depth, path_glob, timings) -> Candidates:
        t0 = time.perf_counter()
        loaded = self._encoder is not None
        encoder, index = self.vectors()
        if not loaded:
            timings["load"] = time.perf_counter() - t0  # torch and the model, once per process
        t0 = time.perf_counter()
        q = encoder.embed_query(query)
        t1 = time.perf_counter()
        ids, scores = index.search(q, depth * (8 if path_glob else 1))
        if path_glob:
            keep = np.isin(ids, self._glob_ids(path_glob))
            ids, scores = ids[keep][:depth], scores[keep][:depth]
        mean, spread = self._sample.stats(q)
        timings.update(embed=t1 - t0, vector=time.perf_counter() - t1)
        return Candidates(ids, scores, mean, spread, fusion.keyword_style(query))

    def _fuse(self, bm25, vector, k, method: str | None = None, weight: float | None = None):
        if method is None:
            method, weight = self.fusion()
        if method == "rrf":
            fused = fusion.rrf([bm25.ids, vector.ids], [1 - weight, weight])
        elif method == "weighted":
            fused = fusion.weighted([(bm25.ids, bm25.scores), (vector.ids, vector.scores)], [1 - weight, weight])
        else:
            fused = fusion.calibrated((bm25.ids, bm25.scores), bm25.ref, (vector.ids, vector.scores),
                                      vector.ref, weight, vector.spread, vector.keywords)
        return fusion.top(fused, k)

    def candidates(self, query: str, depth: int):
        """(bm25 (ids, scores), vector (ids, scores)) before fusion, for tuning it."""
        timings: dict[str, float] = {}
        return self._bm25_list(query, depth, None, timings)[0], self._vector_list(query, depth, None, timings)

    def fuse_paths(self, bm25, vector, k: int, method: str, weight: float) -> list[str]:
        """Document paths of a fusion of `candidates`, best first."""
        paths = self._paths()
        return [paths[c] for c, _ in self._fuse(bm25, vector, k, method, weight) if c in paths]

    def _paths(self) -> dict[int, str]:
        version = self.store.data_version
        if self._path_map is None or self._path_map[0] != version:
            rows = self.store.conn.execute(
                "SELECT c.id, d.path, d.root FROM chunks c JOIN documents d ON d.id = c.doc_id")
            self._path_map = (version, {c: os.path.relpath(p, r) for c, p, r in rows})
        return self._path_map[1]

    def fusion(self) -> tuple[str, float]:
        """The store's fusion method and vector weight (`kb eval` can recommend them)."""
        raw = self.store.meta("fusion")
        if raw:
            cfg = json.loads(raw)
            return cfg["method"], float(cfg["weight"])
        return DEFAULT_FUSION

    def vectors(self):
        """(query encoder, vector index) for the store's encoder; loaded once per Searcher."""
        from kb.embed.encoder import EmbedConfig, describe, load_encoder
        from kb.index import background, vectors

        meta = json.loads(self.store.meta("embedding"))
        if self._encoder is None:
            cfg = EmbedConfig(**meta["config"])
            spec = describe(cfg)
            if spec.key != meta["key"]:
                raise StoreIncompatible(
                    f"the vectors in {self.store.dir} were made by {meta['fingerprint']['model']} "
                    f"({meta['fingerprint']['model_sha256']}, {meta['fingerprint']['dims']} dims); the model "
                    f"found now differs ({spec.fingerprint['model_sha256']}, {spec.dims} dims): "
                    "run `kb index --rebuild PATH...` to embed again")
            self._encoder = load_encoder(cfg)
            # Random chunks (hash order is random) for each query's background similarity, topped
            # up with kb's generic passages in a store of fewer chunks (index/background.py).
            rows = self.store.conn.execute(
                "SELECT vector FROM embeddings WHERE model = ? LIMIT ?", (meta["key"], background.SAMPLE)).fetchall()
            sample = np.frombuffer(b"".join(r[0] for r in rows), dtype=np.float32).reshape(
                len(rows), self._encoder.dims)
            self._sample = background.Background.load(self._encoder, sample, self.store.dir)
        version = self.store.data_version
        if self._vindex is None or self._vindex[0].version != version:
            self._vindex = vectors.current(self.store, meta["key"], self._encoder.dims, "auto")
        return self._encoder, self._vindex[1]

    def _known(self, terms: list[str], ids: dict[str, int]) -> list[str]:
        """The terms that are in the index, recording their ids in `ids`."""
        found: dict[str, int] = {}
        unique = list(dict.fromkeys(terms))
        for i in range(0, len(unique), 500):  # SQLite takes at most 32,766 variables a statement
            part = unique[i:i + 500]
            found.update(self.store.conn.execute(
                f"SELECT term, id FROM terms WHERE term IN ({','.join('?' * len(part))})", part))
        ids.update(found)
        return [t for t in terms if t in found]

    def _glob_ids(self, glob: str) -> np.ndarray:
        """Chunks whose document path, relative to its indexed folder, matches the SQLite GLOB."""
        key = (glob, self.store.data_version)
        if key not in self._globs:
            try:
                rows = self.store.conn.execute(
                    "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.doc_id "
                    "WHERE substr(d.path, length(d.root) + 2) GLOB ?", (glob,)).fetchall()
            except sqlite3.OperationalError as e:
                if "too complex" not in str(e):
                    raise
                raise UsageError(f"--path: the pattern is too long for SQLite's GLOB ({len(glob):,} "
                                 "characters)") from e
            self._globs[key] = np.array([r[0] for r in rows], dtype=np.int64)
        return self._globs[key]

    def _glob_mask(self, cache: Bm25Cache, glob: str) -> np.ndarray:
        """`_glob_ids` as a mask over the BM25 cache's rows, kept while the store is unchanged."""
        key = ("mask", glob, cache.version)
        if key not in self._globs:
            self._globs[key] = np.isin(cache.chunk_ids, self._glob_ids(glob))
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
