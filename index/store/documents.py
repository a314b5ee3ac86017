"""The `documents` and `chunks` rows: written inside the caller's transaction, and counted.

A changed document keeps the rows of chunks whose text is unchanged (only their position is
updated), so their postings, and later their embeddings, are not recomputed."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kb.index.store.terms import TermIds, delete_postings, insert_postings, update_postings

if TYPE_CHECKING:  # what a reader process makes (kb.index.readpool); only their attributes are read here
    from kb.index.bm25 import TermBags
    from kb.index.chunker import Chunk


@dataclass(frozen=True)
class DocRow:
    id: int
    path: str
    root: str
    size: int
    mtime_ns: int
    hash: str
    indexed_at: float  # when its chunks were written


def docs_under(conn: sqlite3.Connection, root: str) -> dict[str, DocRow]:
    """Documents whose path is `root` or lies below it ('/' < '0' makes the range exact)."""
    rows = conn.execute(
        "SELECT id, path, root, size, mtime_ns, hash, indexed_at FROM documents "
        "WHERE path = ? OR (path >= ? AND path < ?)", (root, root + "/", root + "0"))
    return {r[1]: DocRow(*r) for r in rows}


@dataclass(frozen=True)
class NewDoc:
    path: str
    root: str
    kind: str
    size: int
    mtime_ns: int
    hash: str
    note: str | None
    chunks: list[Chunk]
    terms: TermBags  # each chunk's BM25 terms


def write_document(conn: sqlite3.Connection, terms: TermIds, doc: NewDoc, old_id: int | None,
                   added_rows: list | None = None) -> tuple[int, int]:
    """Insert or replace one document; returns (chunks added, chunks removed). The added chunks'
    (text hash, token ids) are appended to `added_rows` if given."""
    values = (doc.root, doc.kind, doc.size, doc.mtime_ns, doc.hash, time.time(), doc.note)
    if old_id is None:
        doc_id = conn.execute(
            "INSERT INTO documents(root, kind, size, mtime_ns, hash, indexed_at, note, path) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", values + (doc.path,)).lastrowid
        old: dict[str, list[int]] = {}
    else:
        doc_id = old_id
        conn.execute("UPDATE documents SET root=?, kind=?, size=?, mtime_ns=?, hash=?, "
                     "indexed_at=?, note=? WHERE id=?", values + (doc_id,))
        old = {}
        for chunk_id, h in conn.execute("SELECT id, hash FROM chunks WHERE doc_id = ?", (doc_id,)):
            old.setdefault(h, []).append(chunk_id)
    blobs, n_terms = doc.terms.blobs(terms.array(doc.terms.vocab))
    moved, moved_terms, fresh = [], [], []
    for i, c in enumerate(doc.chunks):
        reused = old.get(c.hash)
        if reused:  # the same text (its vector is kept); its heading, and so its terms, may differ
            chunk_id = reused.pop()
            moved.append((c.seq, c.start_line, c.end_line, c.heading, n_terms[i], chunk_id))
            moved_terms.append((chunk_id, blobs[i]))
        else:
            fresh.append(i)
    conn.executemany("UPDATE chunks SET seq=?, start_line=?, end_line=?, heading=?, n_terms=? WHERE id=?", moved)
    update_postings(conn, moved_terms)
    if fresh:
        _insert_chunks(conn, doc, doc_id, fresh, (blobs, n_terms), added_rows)
    stale = [i for ids in old.values() for i in ids]
    _delete_chunks(conn, stale)
    return len(fresh), len(stale)


def _insert_chunks(conn: sqlite3.Connection, doc: NewDoc, doc_id: int, fresh: list[int],
                   postings_of: tuple[list[bytes], list[int]], added_rows: list | None) -> None:
    """The chunks `fresh` (indices into doc.chunks) of document `doc_id`, with their postings
    (`postings_of`: every chunk's blob and length in terms)."""
    # Ids are handed out here, so that the chunks and their postings go in as two bulk inserts;
    # `kb index` holds the store's write lock, and this runs inside its transaction.
    first = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM chunks").fetchone()[0]
    blobs, n_terms = postings_of
    rows, postings = [], []
    for chunk_id, i in enumerate(fresh, first):
        c = doc.chunks[i]
        rows.append((chunk_id, doc_id, c.seq, c.start_line, c.end_line, c.heading, c.text, c.hash,
                     c.token_ids.tobytes(), n_terms[i]))
        postings.append((chunk_id, blobs[i]))
        if added_rows is not None:
            added_rows.append((c.hash, c.token_ids))
    conn.executemany("INSERT INTO chunks(id, doc_id, seq, start_line, end_line, heading, text, hash, "
                     "token_ids, n_terms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    insert_postings(conn, postings)


def touch_document(conn: sqlite3.Connection, doc_id: int, root: str, size: int, mtime_ns: int) -> None:
    """The bytes are unchanged (same hash); remember the new stat so the next run skips reading."""
    conn.execute("UPDATE documents SET root=?, size=?, mtime_ns=? WHERE id=?", (root, size, mtime_ns, doc_id))


def delete_documents(conn: sqlite3.Connection, doc_ids: list[int]) -> int:
    """Remove documents with their chunks and postings; returns the number of chunks removed."""
    removed = 0
    for doc_id in doc_ids:
        chunk_ids = [r[0] for r in conn.execute("SELECT id FROM chunks WHERE doc_id = ?", (doc_id,))]
        _delete_chunks(conn, chunk_ids)
        conn.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
        removed += len(chunk_ids)
    return removed


def _delete_chunks(conn: sqlite3.Connection, chunk_ids: list[int]) -> None:
    if chunk_ids:
        delete_postings(conn, chunk_ids)
        conn.executemany("DELETE FROM chunks WHERE id = ?", ((c,) for c in chunk_ids))


def clear_all(conn: sqlite3.Connection) -> None:
    """Drop every document (for `kb index --rebuild`)."""
    for table in ("chunk_terms", "terms", "chunks", "documents"):
        conn.execute(f"DELETE FROM {table}")


def has_documents(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM documents LIMIT 1").fetchone() is not None


def existing_chunks(conn: sqlite3.Connection, chunk_ids: list[int]) -> list[int]:
    """Those of `chunk_ids` that are still in the store."""
    out = []
    for i in range(0, len(chunk_ids), 500):  # SQLite's limit on a statement's variables
        part = chunk_ids[i:i + 500]
        out += [r[0] for r in conn.execute(f"SELECT id FROM chunks WHERE id IN ({','.join('?' * len(part))})", part)]
    return out


def counts(conn: sqlite3.Connection) -> dict:
    """{"documents", "skipped_documents" (recorded without chunks), "chunks", "roots" (sorted)}."""
    import sqlite_utils  # the card's SQLite toolkit; only `kb status` needs it, so imported here

    db = sqlite_utils.Database(conn)
    return {"documents": db.table("documents").count,
            "skipped_documents": db.table("documents").count_where("note IS NOT NULL"),
            "chunks": db.table("chunks").count,
            "roots": [r[0] for r in conn.execute("SELECT root FROM documents GROUP BY root ORDER BY root")]}
