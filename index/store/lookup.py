"""The reads that search makes: term ids, the chunks under a path pattern, the rows of hits, chunk
paths for evaluation, and a sample of stored vectors. Each takes the store's connection and
returns plain Python values; the retrievers in kb.index.search own the caching."""

from __future__ import annotations

import os
import sqlite3

from kb.errors import UsageError

# SQLite takes at most 32,766 variables a statement; terms are looked up this many at a time.
TERM_BATCH = 500


def term_ids(conn: sqlite3.Connection, terms: list[str]) -> dict[str, int]:
    """term -> id for those of `terms` (distinct) that are in the index."""
    found: dict[str, int] = {}
    for i in range(0, len(terms), TERM_BATCH):
        part = terms[i:i + TERM_BATCH]
        found.update(conn.execute(f"SELECT term, id FROM terms WHERE term IN ({','.join('?' * len(part))})", part))
    return found


def chunks_matching(conn: sqlite3.Connection, glob: str) -> list[int]:
    """Ids of the chunks whose document path, relative to its indexed folder, matches the SQLite GLOB."""
    try:
        rows = conn.execute("SELECT c.id FROM chunks c JOIN documents d ON d.id = c.doc_id "
                            "WHERE substr(d.path, length(d.root) + 2) GLOB ?", (glob,)).fetchall()
    except sqlite3.OperationalError as e:
        if "too complex" not in str(e):
            raise
        raise UsageError(f"--path: the pattern is too long for SQLite's GLOB ({len(glob):,} characters)") from e
    return [r[0] for r in rows]


def chunk_paths(conn: sqlite3.Connection) -> dict[int, str]:
    """Every chunk's document path, relative to its indexed folder."""
    rows = conn.execute("SELECT c.id, d.path, d.root FROM chunks c JOIN documents d ON d.id = c.doc_id")
    return {c: os.path.relpath(p, r) for c, p, r in rows}


def hit_rows(conn: sqlite3.Connection, chunk_ids: list[int]) -> dict[int, tuple]:
    """chunk id -> (path, root, start line, end line, heading, text) for those still stored."""
    if not chunk_ids:
        return {}
    marks = ",".join("?" * len(chunk_ids))
    return {r[0]: r[1:] for r in conn.execute(
        "SELECT c.id, d.path, d.root, c.start_line, c.end_line, c.heading, c.text "
        f"FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE c.id IN ({marks})", chunk_ids)}


def vector_sample(conn: sqlite3.Connection, model_key: str, limit: int) -> list[bytes]:
    """Up to `limit` stored vectors of one encoder, in hash order (so a random sample of chunks)."""
    rows = conn.execute("SELECT vector FROM embeddings WHERE model = ? LIMIT ?", (model_key, limit))
    return [r[0] for r in rows]
