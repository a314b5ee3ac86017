"""Numbered schema migrations of every database kb keeps, applied by one function.

Each database has its list: `STORE` for a store's kb.sqlite, `KV_SOURCES` for the provenance of
`kb ask`'s KV blocks (kv/sources.db). `PRAGMA user_version` holds the number of the last migration
applied. A migration is an SQL script, or a function of the connection where data must be
rewritten; all pending ones run inside one transaction. Append new migrations; never edit one that
has shipped.
"""

from __future__ import annotations

import sqlite3
from typing import Callable, Iterator, Union

Migration = Union[str, Callable[[sqlite3.Connection], None]]


def _postings_per_chunk(conn: sqlite3.Connection) -> None:
    """3: the BM25 postings move from one row per (term, chunk), with two B-tree indexes, to one
    int32 (term id, tf) blob per chunk: `kb index` spent most of its time inserting postings."""
    import numpy as np

    conn.execute("""
        CREATE TABLE chunk_terms (
            chunk_id INTEGER PRIMARY KEY REFERENCES chunks(id),
            terms BLOB NOT NULL             -- int32 pairs (term id, tf), one per distinct term
        )""")
    cur = conn.execute("SELECT chunk_id, term_id, tf FROM postings ORDER BY chunk_id, term_id")
    carry = np.zeros((0, 3), np.int64)
    while True:
        part = np.array(cur.fetchmany(1 << 20), np.int64).reshape(-1, 3)
        done = len(part) == 0
        rows = np.concatenate([carry, part])
        if not done and len(rows):  # the last chunk may continue in the next part
            last = rows[-1, 0]
            carry, rows = rows[rows[:, 0] == last], rows[rows[:, 0] != last]
        starts = np.flatnonzero(np.diff(rows[:, 0], prepend=-1))
        conn.executemany("INSERT INTO chunk_terms VALUES (?, ?)", (
            (int(g[0, 0]), g[:, 1:].astype(np.int32).tobytes()) for g in np.split(rows, starts[1:])
            if len(g)))
        if done:
            break
    conn.execute("INSERT INTO chunk_terms SELECT id, x'' FROM chunks "
                 "WHERE id NOT IN (SELECT chunk_id FROM chunk_terms)")
    conn.execute("DROP TABLE postings")


STORE: list[Migration] = [
    # 1: documents, chunks, the BM25 inverted index, metadata and run history.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE documents (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,      -- absolute path of the file
        root TEXT NOT NULL,             -- the folder given to `kb index`; results show path relative to it
        kind TEXT NOT NULL,             -- markdown | text | rst | code | html | pdf
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        hash TEXT NOT NULL,             -- sha256 of the file's bytes
        indexed_at REAL NOT NULL,
        note TEXT                       -- why it has no chunks (binary, too large, ...), else NULL
    );
    CREATE TABLE chunks (
        id INTEGER PRIMARY KEY,
        doc_id INTEGER NOT NULL REFERENCES documents(id),
        seq INTEGER NOT NULL,           -- position of the chunk in its document
        start_line INTEGER NOT NULL,    -- 1-based, inclusive
        end_line INTEGER NOT NULL,
        heading TEXT NOT NULL,          -- heading path, ' > ' joined
        text TEXT NOT NULL,
        hash TEXT NOT NULL,             -- sha256 of text: the key of the embedding cache
        token_ids BLOB NOT NULL,        -- int32 ids of the embedding tokenizer, no special tokens
        n_terms INTEGER NOT NULL        -- BM25 document length (analysed terms)
    );
    CREATE INDEX chunks_doc ON chunks(doc_id);
    CREATE INDEX chunks_hash ON chunks(hash);
    CREATE TABLE terms (id INTEGER PRIMARY KEY, term TEXT NOT NULL UNIQUE);
    CREATE TABLE postings (
        term_id INTEGER NOT NULL,
        chunk_id INTEGER NOT NULL,
        tf INTEGER NOT NULL,
        PRIMARY KEY (term_id, chunk_id)
    ) WITHOUT ROWID;
    CREATE INDEX postings_chunk ON postings(chunk_id);
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        started REAL NOT NULL,
        finished REAL,
        status TEXT NOT NULL,           -- running | ok | partial | failed
        stats TEXT                      -- JSON summary
    );
    INSERT INTO meta VALUES ('data_version', '0');
    """,
    # 2: embeddings, keyed by the encoder's fingerprint and the chunk text's hash, so that only new
    # texts are embedded and a chunk that moves within or between files keeps its vector.
    """
    CREATE TABLE embeddings (
        model TEXT NOT NULL,            -- Encoder.key: hash of the embedding fingerprint
        hash TEXT NOT NULL,             -- chunks.hash
        vector BLOB NOT NULL,           -- float32, dims of the model
        PRIMARY KEY (model, hash)
    ) WITHOUT ROWID;
    """,
    _postings_per_chunk,
    # 4: embeddings in a rowid table with a unique index: with 1.5 KB rows, a WITHOUT ROWID table
    # (rows stored in the key's B-tree) took 3x as long to insert into in hash order.
    """
    CREATE TABLE embeddings_rowid (
        model TEXT NOT NULL,            -- Encoder.key: hash of the embedding fingerprint
        hash TEXT NOT NULL,             -- chunks.hash
        vector BLOB NOT NULL,           -- float32, dims of the model
        UNIQUE (model, hash)
    );
    INSERT INTO embeddings_rowid(model, hash, vector) SELECT model, hash, vector FROM embeddings;
    DROP TABLE embeddings;
    ALTER TABLE embeddings_rowid RENAME TO embeddings;
    """,
]

SCHEMA_VERSION = len(STORE)

KV_SOURCES: list[Migration] = [
    # 1: which chunks each KV block on disk was computed from. IF NOT EXISTS: sources.db files made
    # before it was numbered hold this table at user_version 0.
    """
    CREATE TABLE IF NOT EXISTS block_chunks (
        fingerprint TEXT NOT NULL, digest TEXT NOT NULL, chunk_id INTEGER NOT NULL,
        PRIMARY KEY (fingerprint, digest, chunk_id)) WITHOUT ROWID;
    """,
]


def version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def apply(conn: sqlite3.Connection, migrations: list[Migration]) -> None:
    """Bring `conn` (autocommit mode: isolation_level None) to len(migrations) in one transaction.
    The caller has checked that the database is not newer than `migrations`."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Re-read under the write lock: another process may have migrated meanwhile.
        for step in migrations[version(conn):]:
            if callable(step):
                step(conn)
            else:
                for statement in _statements(step):
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version={len(migrations)}")
        conn.execute("COMMIT")
    except BaseException:
        # SQLite has already rolled back after some errors (a full disk): a second ROLLBACK
        # would fail and hide the error that matters
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements (executescript would commit our transaction)."""
    buf = ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n;"):
                yield buf
            buf = ""
