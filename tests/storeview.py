"""Reading a store's BM25 postings back as rows, for tests that compare stores."""

import sqlite3

from kb.index.store.terms import read_postings


def postings(conn: sqlite3.Connection) -> list[tuple[int, str, int]]:
    """(chunk id, term, tf) for every posting in the forward index."""
    chunk_ids, rows, pairs = read_postings(conn)
    terms = dict(conn.execute("SELECT id, term FROM terms"))
    return [(int(chunk_ids[r]), terms[int(t)], int(tf)) for r, (t, tf) in zip(rows, pairs)]
