"""Embeddings in the store: one float32 vector per (encoder key, chunk text hash)."""

from __future__ import annotations

import sqlite3

import numpy as np

from kb.index.store import Store


def missing(conn: sqlite3.Connection, key: str) -> list[tuple[str, bytes]]:
    """(hash, token_ids blob) of chunk texts that have no vector under `key` yet, one per text."""
    return conn.execute(
        "SELECT c.hash, min(c.token_ids) FROM chunks c WHERE NOT EXISTS "
        "(SELECT 1 FROM embeddings e WHERE e.model = ? AND e.hash = c.hash) GROUP BY c.hash",
        (key,)).fetchall()


def write(conn: sqlite3.Connection, key: str, hashes: list[str], vectors: np.ndarray) -> None:
    conn.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)",
                     ((key, h, v.astype(np.float32).tobytes()) for h, v in zip(hashes, vectors)))


def collect_garbage(conn: sqlite3.Connection, key: str) -> int:
    """Drop vectors of texts no chunk has any more, and of other encoders."""
    return conn.execute(
        "DELETE FROM embeddings WHERE model != ? OR hash NOT IN (SELECT hash FROM chunks)", (key,)
    ).rowcount


def matrix(store: Store, key: str, dims: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(data_version, chunk ids sorted, (n, dims) vectors) of every chunk that has a vector."""
    with store.snapshot() as conn:
        version = store.data_version
        rows = conn.execute(
            "SELECT c.id, e.vector FROM chunks c JOIN embeddings e ON e.model = ? AND e.hash = c.hash "
            "ORDER BY c.id", (key,)).fetchall()
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dims)
    return version, ids, vecs
