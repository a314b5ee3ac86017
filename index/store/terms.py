"""The BM25 inverted index's rows: `terms(id, term)`, and `chunk_terms(chunk_id, terms)`, each
chunk's (term id, tf) pairs as one int32 blob (kb.index.bm25 says why)."""

from __future__ import annotations

import sqlite3

import numpy as np


class TermIds:
    """term -> id for one index run. `reset()` after a rolled-back transaction: ids it handed out
    may have been rolled back and would otherwise be reused for other terms."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self._ids: dict[str, int] | None = None

    def reset(self) -> None:
        self._ids = None

    def array(self, terms: list[str]) -> np.ndarray:
        """The ids of `terms`, in order, as int32 (new terms are added to the store)."""
        ids = self.ids(terms)
        return np.fromiter(map(ids.__getitem__, terms), np.int32, len(terms))

    def ids(self, terms) -> dict[str, int]:
        if self._ids is None:
            self._ids = dict(self.conn.execute("SELECT term, id FROM terms"))
            self._next = max(self._ids.values(), default=0) + 1
        new = [t for t in dict.fromkeys(terms) if t not in self._ids]
        if new:
            # Ids are handed out here (`kb index` holds the write lock, inside its transaction),
            # so new terms go in as one bulk insert with nothing to read back.
            first, self._next = self._next, self._next + len(new)
            self.conn.executemany("INSERT INTO terms(id, term) VALUES (?, ?)", zip(range(first, self._next), new))
            self._ids.update(zip(new, range(first, self._next)))
        return self._ids


def insert_postings(conn: sqlite3.Connection, rows: list[tuple[int, bytes]]) -> None:
    """(chunk id, its (term id, tf) blob) of new chunks."""
    conn.executemany("INSERT INTO chunk_terms VALUES (?, ?)", rows)


def update_postings(conn: sqlite3.Connection, rows: list[tuple[int, bytes]]) -> None:
    """(chunk id, its new (term id, tf) blob) of chunks kept with new terms."""
    conn.executemany("UPDATE chunk_terms SET terms = ? WHERE chunk_id = ?", [(b, c) for c, b in rows])


def delete_postings(conn: sqlite3.Connection, chunk_ids: list[int]) -> None:
    conn.executemany("DELETE FROM chunk_terms WHERE chunk_id = ?", ((c,) for c in chunk_ids))


def read_postings(conn: sqlite3.Connection) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chunk ids sorted, row into them of each posting, (nnz, 2) int32 (term id, tf) pairs)."""
    rows = conn.execute("SELECT chunk_id, terms FROM chunk_terms ORDER BY chunk_id").fetchall()
    chunk_ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
    lengths = np.fromiter((len(r[1]) // 8 for r in rows), np.int64, len(rows))
    pairs = np.frombuffer(b"".join(r[1] for r in rows), np.int32).reshape(-1, 2)
    return chunk_ids, np.repeat(np.arange(len(rows), dtype=np.int64), lengths), pairs


def max_term_id(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT coalesce(max(id), 0) FROM terms").fetchone()[0]


def all_term_ids(conn: sqlite3.Connection) -> np.ndarray:
    return np.fromiter((r[0] for r in conn.execute("SELECT id FROM terms")), np.int64)


def count_terms(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT count(*) FROM terms").fetchone()[0]


def count_postings(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT coalesce(sum(length(terms)), 0) / 8 FROM chunk_terms").fetchone()[0]


def torn_blobs(conn: sqlite3.Connection) -> int:
    """chunk_terms blobs that are not whole (term, tf) pairs (damage only a broken file makes)."""
    return conn.execute("SELECT count(*) FROM chunk_terms WHERE length(terms) % 8 != 0").fetchone()[0]
