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


def chunks_in(conn: sqlite3.Connection, path: str | None, kinds: tuple[str, ...],
              since: float | None, roots: tuple[str, ...] = ()) -> list[int]:
    """Ids of the chunks of documents under `path` (kb.index.search.paths.Scope), of `kinds`
    (reader kinds or file extensions), modified at or after `since` (epoch seconds) and indexed
    under one of `roots`."""
    where, args = ["1"], []
    if roots:
        where.append(f"d.root IN ({','.join('?' * len(roots))})")
        args += list(roots)
    if path:
        clause, more = _path_clause(path)
        where.append(clause)
        args += more
    if kinds:
        where.append(f"(d.kind IN ({','.join('?' * len(kinds))}) OR "
                     + " OR ".join(["d.path LIKE ?"] * len(kinds)) + ")")
        args += [*kinds, *("%." + k.lstrip(".") for k in kinds)]
    if since is not None:
        where.append("d.mtime_ns >= ?")
        args.append(int(since * 1e9))
    try:
        rows = conn.execute("SELECT c.id FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE "
                            + " AND ".join(where), args).fetchall()
    except sqlite3.OperationalError as e:
        if "too complex" not in str(e):
            raise
        raise UsageError(f"--path: the pattern is too long for SQLite's GLOB ({len(path):,} characters)") from e
    return [r[0] for r in rows]


_RELATIVE = "substr(d.path, length(d.root) + 2)"


def _path_clause(path: str) -> tuple[str, list]:
    """A GLOB on the path relative to the indexed folder; a path without wildcards is a file or a
    folder: absolute where it exists here (`.`, `~/notes`), else relative to the indexed folder."""
    if any(c in path for c in "*?["):
        return f"{_RELATIVE} GLOB ?", [path]
    p = os.path.expanduser(path).rstrip("/") or "/"
    if os.path.exists(p) or os.path.isabs(p):
        p = os.path.abspath(p)
        return "(d.path = ? OR substr(d.path, 1, length(rtrim(?, '/')) + 1) = rtrim(?, '/') || '/')", [p, p, p]
    return (f"({_RELATIVE} = ? OR substr({_RELATIVE}, 1, length(?) + 1) = ? || '/')", [p, p, p])


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


def documents_named(conn: sqlite3.Connection, name: str) -> list[tuple]:
    """(id, path, root, kind, hash) of the documents whose absolute path is `name`, or whose path
    relative to their indexed folder is (several folders may hold one)."""
    return conn.execute("SELECT id, path, root, kind, hash FROM documents WHERE path = ? "
                        "OR (substr(path, 1, length(root) + 1) = root || '/' AND substr(path, length(root) + 2) = ?) "
                        "ORDER BY path", (name, name)).fetchall()


def document_chunks(conn: sqlite3.Connection, doc_id: int) -> list[tuple[int, int, str]]:
    """(start line, end line, text) of a document's chunks, in order."""
    return conn.execute("SELECT start_line, end_line, text FROM chunks WHERE doc_id = ? ORDER BY seq",
                        (doc_id,)).fetchall()


def document_of_chunk(conn: sqlite3.Connection, chunk_id: int) -> tuple | None:
    """(document id, absolute path, kind, hash) of a chunk's document, or None if it is gone."""
    return conn.execute("SELECT d.id, d.path, d.kind, d.hash FROM chunks c JOIN documents d ON d.id = c.doc_id "
                        "WHERE c.id = ?", (chunk_id,)).fetchone()


def documents_page(conn: sqlite3.Connection, limit: int) -> list[tuple]:
    """(id, path, root, kind) of the first `limit` documents by path."""
    return conn.execute("SELECT id, path, root, kind FROM documents ORDER BY path LIMIT ?", (limit,)).fetchall()


def document_path(conn: sqlite3.Connection, doc_id: int) -> str | None:
    row = conn.execute("SELECT path FROM documents WHERE id = ?", (doc_id,)).fetchone()
    return row[0] if row else None
