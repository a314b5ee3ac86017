"""What `kb check` asks SQLite: its integrity checks, and rows left pointing nowhere."""

from __future__ import annotations

import sqlite3
from collections import Counter

# Rows left pointing nowhere, as SQL after FROM. Deleted in this order: deleting a chunk orphans
# its postings and possibly its text's vector.
ORPHANS = {
    "chunks": "chunks WHERE doc_id NOT IN (SELECT id FROM documents)",
    "chunk_terms": "chunk_terms WHERE chunk_id NOT IN (SELECT id FROM chunks)",
    "embeddings": "embeddings WHERE model = :key AND hash NOT IN (SELECT hash FROM chunks)",
}


def begin_snapshot(conn: sqlite3.Connection) -> None:
    """Start one read transaction on `conn`, so that every check after it sees the same store (a
    concurrent `kb index` shows all or nothing); it ends when the connection closes."""
    conn.execute("BEGIN")


def integrity(conn: sqlite3.Connection, limit: int = 20) -> list[str]:
    """SQLite's full integrity check: ['ok'], or up to `limit` complaints."""
    return [r[0] for r in conn.execute(f"PRAGMA integrity_check({int(limit)})")]


def foreign_key_orphans(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
    """(table, the parent table its rows point to) -> rows whose parent row is missing."""
    return dict(Counter((r[0], r[2]) for r in conn.execute("PRAGMA foreign_key_check")))


def orphan_vectors(conn: sqlite3.Connection, key: str) -> int:
    """Vectors of encoder `key` that no chunk's text uses."""
    return conn.execute(f"SELECT count(*) FROM {ORPHANS['embeddings']}", {"key": key}).fetchone()[0]


def delete_orphans(conn: sqlite3.Connection, key: str | None) -> dict[str, int]:
    """Delete every orphan row (vectors: of encoder `key`), inside the caller's transaction;
    table -> rows deleted, in the order of ORPHANS."""
    return {table: conn.execute(f"DELETE FROM {rows}", {"key": key}).rowcount for table, rows in ORPHANS.items()}
