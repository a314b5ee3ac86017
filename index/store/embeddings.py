"""The `embeddings` rows: one float32 vector per (encoder key, chunk text hash)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

import numpy as np

from kb.index.store import Store


def missing(conn: sqlite3.Connection, key: str) -> list[tuple[str, bytes, str]]:
    """(hash, token_ids blob, text) of chunk texts that have no vector under `key` yet, one per text."""
    return conn.execute(
        "SELECT c.hash, min(c.token_ids), min(c.text) FROM chunks c WHERE NOT EXISTS "
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


def listing(conn: sqlite3.Connection, key: str) -> tuple[np.ndarray, list[str]]:
    """(chunk ids sorted, their text hashes) of every chunk that has a vector: two scans (the
    embeddings' unique index, the chunks table), no vector is touched."""
    have = {h for (h,) in conn.execute("SELECT hash FROM embeddings WHERE model = ?", (key,))}
    rows = [r for r in conn.execute("SELECT id, hash FROM chunks ORDER BY id") if r[1] in have]
    return np.fromiter((r[0] for r in rows), np.int64, len(rows)), [r[1] for r in rows]


def vectors(conn: sqlite3.Connection, key: str, hashes: list[str], dims: int,
            known: Mapping[str, np.ndarray]) -> np.ndarray:
    """(len(hashes), dims) float32: the vector of each text hash, from `known` (what this process
    wrote, bit for bit) where it has it, else from the store."""
    out = np.empty((len(hashes), dims), dtype=np.float32)
    need: dict[str, list[int]] = {}
    for i, h in enumerate(hashes):
        v = known.get(h)
        if v is None:
            need.setdefault(h, []).append(i)
        else:
            out[i] = v
    wanted = list(need)
    for s in range(0, len(wanted), 500):
        part = wanted[s:s + 500]
        for h, blob in conn.execute(f"SELECT hash, vector FROM embeddings WHERE model = ? AND hash IN "
                                    f"({','.join('?' * len(part))})", (key, *part)):
            out[need.pop(h)] = np.frombuffer(blob, np.float32)
    assert not need, "a vector vanished inside a snapshot"
    return out


def matrix(store: Store, key: str, dims: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(data_version, chunk ids sorted, (n, dims) vectors) of every chunk that has a vector, in one
    scan (for a build from nothing)."""
    with store.snapshot() as conn:
        version = store.data_version
        rows = conn.execute(
            "SELECT c.id, e.vector FROM chunks c JOIN embeddings e ON e.model = ? AND e.hash = c.hash "
            "ORDER BY c.id", (key,)).fetchall()
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dims)
    return version, ids, vecs


def text_counts(conn: sqlite3.Connection) -> tuple[int, int]:
    """(distinct chunk texts, how many of them have a vector under any encoder)."""
    return conn.execute(
        "SELECT count(*), count(e.hash) FROM (SELECT DISTINCT hash FROM chunks) c "
        "LEFT JOIN (SELECT DISTINCT hash FROM embeddings) e ON e.hash = c.hash").fetchone()
