"""BM25 over the store's inverted index.

The source of truth is two SQLite tables (kb.index.store.terms): `terms(id, term)`, and
`chunk_terms(chunk_id, terms)`, a forward index holding each chunk's (term id, tf) pairs as one
int32 blob; a tf packs the term's count in the chunk's text (low 16 bits) and in its title field
(file name and heading path, the bits above), BM25F's two fields. A chunk's postings are written and deleted with its row, one row per chunk instead of
one per (term, chunk), which is what keeps `kb index` off SQLite's B-trees. Queries read a derived cache (`bm25.npz`), the
inverted index: for each term, the rows of its postings and their precomputed Lucene BM25 weights

    idf(t) * tf / (tf + k1 * (1 - b + b * dl / avgdl)),  idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))

with tf = text count + title_weight * title count, and dl the sum of a chunk's tf. The title's
weight is the store's (`kb eval --tune --apply` stores one), else TITLE_WEIGHT;

in CSC layout, so that a query is a few slices, one bincount and an argpartition (as bm25s does).
The cache is tagged with the store's data_version and rebuilt from SQLite whenever it is stale.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np

from kb.common import BROKEN_FILE, write_atomic
from kb.index.analyzer import ANALYZER_VERSION
from kb.index.store import Store, terms

K1 = 1.2
B = 0.75
TITLE_WEIGHT = 2.0  # a title term counts as this many occurrences of it in the text
TITLE_SHIFT = 16  # a packed tf: text count | title count << TITLE_SHIFT
_COUNT = (1 << TITLE_SHIFT) - 1
CACHE_FILE = "bm25.npz"


@dataclass(frozen=True)
class TermBags:
    """The BM25 terms of a document's chunks, compact for the trip from a reader process: the
    document's distinct terms, and for chunk i `pairs[offsets[i]:offsets[i + 1]]`, its
    (index into `vocab`, term frequency) pairs."""
    vocab: list[str]
    pairs: np.ndarray    # (n, 2) int32
    offsets: np.ndarray  # (chunks + 1,) int64

    @classmethod
    def of(cls, chunk_terms: list[tuple[list[str], list[str]]]) -> "TermBags":
        """From each chunk's (text terms, title terms)."""
        vocab: dict[str, int] = {}
        fields = [f for pair in chunk_terms for f in pair]  # chunk i's text is field 2i, its title 2i + 1
        lengths = np.fromiter(map(len, fields), np.int64, len(fields))
        index = np.fromiter((vocab.setdefault(t, len(vocab)) for terms in fields for t in terms),
                            np.int64, int(lengths.sum()))
        field = np.repeat(np.arange(len(fields)), lengths)
        # One sort for the document: (chunk, term) keys, counted per field; a chunk's pairs by vocab index.
        width = max(len(vocab), 1)
        keys, at = np.unique((field // 2) * width + index, return_inverse=True)
        at, title = at.reshape(-1), field % 2
        text_tf = np.bincount(at, weights=1 - title, minlength=len(keys)).astype(np.int64)
        title_tf = np.bincount(at, weights=title, minlength=len(keys)).astype(np.int64)
        tf = np.minimum(text_tf, _COUNT) | np.minimum(title_tf, _COUNT >> 1) << TITLE_SHIFT
        pairs = np.stack((keys % width, tf), axis=1).astype(np.int32)
        offsets = np.searchsorted(keys // width, np.arange(len(chunk_terms) + 1)).astype(np.int64)
        return cls(list(vocab), pairs.reshape(-1, 2), offsets)

    def blobs(self, term_ids: np.ndarray) -> tuple[list[bytes], list[int]]:
        """Each chunk's `chunk_terms` blob under the store's `term_ids` (by vocab index), and its
        length in terms (the BM25 document length under the default title weight)."""
        mapped = self.pairs.copy()
        mapped[:, 0] = term_ids[self.pairs[:, 0]]
        raw, at = mapped.tobytes(), (self.offsets * 8).tolist()
        tf_sums = np.concatenate(([0], np.cumsum(weighted_tf(self.pairs[:, 1], TITLE_WEIGHT), dtype=np.int64)))
        lengths = (tf_sums[self.offsets[1:]] - tf_sums[self.offsets[:-1]]).tolist()
        return [raw[at[i]:at[i + 1]] for i in range(len(at) - 1)], lengths


def weighted_tf(packed: np.ndarray, title_weight: float) -> np.ndarray:
    """Term frequencies of packed (text, title) counts, a title occurrence counting `title_weight`."""
    packed = packed.astype(np.int64)
    return (packed & _COUNT) + title_weight * (packed >> TITLE_SHIFT)


def title_weight(store: Store) -> float:
    """The store's title weight: what `kb eval --tune --apply` stored, else TITLE_WEIGHT."""
    raw = store.meta("title_weight")
    return float(raw) if raw else TITLE_WEIGHT


@dataclass
class Bm25Cache:
    version: int
    indptr: np.ndarray     # (n_terms + 2,) int64, by term id
    rows: np.ndarray       # (nnz,) int32, row into chunk_ids
    weights: np.ndarray    # (nnz,) float32, BM25 weight of the posting
    chunk_ids: np.ndarray  # (n_chunks,) int64, sorted
    title_weight: float = TITLE_WEIGHT

    @classmethod
    def build(cls, store: Store, title: float | None = None) -> "Bm25Cache":
        """From SQLite, with the title field weighted `title` (default: the store's weight)."""
        title = title_weight(store) if title is None else title
        with store.snapshot() as conn:
            version = store.data_version
            chunk_ids, rows, pairs = terms.read_postings(conn)
            max_term = terms.max_term_id(conn)
        order = np.argsort(pairs[:, 0], kind="stable")  # CSC: by term, then by chunk (rows ascend)
        term, rows, tf = pairs[order, 0].astype(np.int64), rows[order], weighted_tf(pairs[order, 1], title)
        dl = np.bincount(rows, weights=tf, minlength=len(chunk_ids))
        df = np.bincount(term, minlength=max_term + 1)
        indptr = np.zeros(max_term + 2, dtype=np.int64)
        np.cumsum(df, out=indptr[1:])
        n = len(chunk_ids)
        avgdl = dl.mean() if n else 1.0
        idf = np.log1p((n - df + 0.5) / (df + 0.5))
        norm = K1 * (1 - B + B * dl / max(avgdl, 1e-9))
        weights = idf[term] * tf / (tf + norm[rows])
        return cls(version, indptr, rows.astype(np.int32), weights.astype(np.float32), chunk_ids, title)

    @staticmethod
    def tag(version: int, title: float) -> dict:
        """What a cache file must say to be current."""
        return {"version": version, "analyzer": ANALYZER_VERSION, "k1": K1, "b": B, "title": title}

    def save(self, store: Store) -> None:
        buf = io.BytesIO()
        tag = json.dumps(self.tag(self.version, self.title_weight))
        np.savez(buf, tag=np.array(tag), indptr=self.indptr, rows=self.rows,
                 weights=self.weights, chunk_ids=self.chunk_ids)
        write_atomic(store.path(CACHE_FILE), buf.getvalue())

    @classmethod
    def load(cls, store: Store, version: int) -> "Bm25Cache | None":
        """The cache file if it reflects `version` and today's analysis; None if stale or broken."""
        try:
            with np.load(store.path(CACHE_FILE), allow_pickle=False) as f:
                title = title_weight(store)
                if json.loads(str(f["tag"])) != cls.tag(version, title):
                    return None
                return cls(version, f["indptr"], f["rows"], f["weights"], f["chunk_ids"], title)
        except BROKEN_FILE:  # missing, torn, damaged or foreign: rebuild
            return None

    @classmethod
    def current(cls, store: Store) -> "Bm25Cache":
        """Load the cache, or rebuild it from SQLite (and save it when the store is writable)."""
        cache = cls.load(store, store.data_version)
        if cache is None:
            cache = cls.build(store)
            try:
                cache.save(store)
            except OSError:
                pass  # a read-only store still answers queries from the in-memory rebuild
        return cache

    def max_score(self, term_ids: list[int], unknown: int) -> float:
        """An upper bound of a query's score: every term's idf (tf / (tf + norm) < 1), with
        words not in the index counted at the idf of a term no chunk has."""
        n = len(self.chunk_ids)
        df = np.array([self.indptr[t + 1] - self.indptr[t] for t in term_ids if t + 1 < len(self.indptr)])
        return float(np.log1p((n - df + 0.5) / (df + 0.5)).sum() + unknown * np.log1p((n + 0.5) / 0.5))

    def scores(self, term_ids: list[int]) -> np.ndarray:
        """(n_chunks,) float64 BM25 scores of a query of distinct term ids."""
        parts = [slice(self.indptr[t], self.indptr[t + 1]) for t in term_ids if t + 1 < len(self.indptr)]
        if not parts:
            return np.zeros(len(self.chunk_ids))
        rows = np.concatenate([self.rows[s] for s in parts])
        weights = np.concatenate([self.weights[s] for s in parts])
        return np.bincount(rows, weights=weights, minlength=len(self.chunk_ids))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k best positive scores, best first; ties broken by row (stable across runs)."""
    candidates = np.flatnonzero(scores > 0)
    if len(candidates) > k:
        part = np.argpartition(-scores[candidates], k - 1)[:k]
        candidates = candidates[part]
    order = np.lexsort((candidates, -scores[candidates]))
    return candidates[order]
