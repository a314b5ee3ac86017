"""Which document chunks each KV block on disk was computed from, so that `kb index` can drop the
blocks of chunks that are gone. A block's keys and values depend on every token before its end,
so on each source whose text starts before it. Blocks stay valid across reindexing otherwise:
they are keyed by their tokens, not by the index's state. No torch here: `kb index` imports it.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Callable

from kb.index.store import is_damage, private_dir, private_file


def block_path(folder: Path, digest: str) -> Path:
    return folder / digest[:2] / f"{digest}.npz"


SOURCES_SCHEMA = """CREATE TABLE IF NOT EXISTS block_chunks (
    fingerprint TEXT NOT NULL, digest TEXT NOT NULL, chunk_id INTEGER NOT NULL,
    PRIMARY KEY (fingerprint, digest, chunk_id)) WITHOUT ROWID"""


def _sources_db(root: Path) -> sqlite3.Connection:
    private_dir(root)
    private_file(root / "sources.db")  # SQLite gives its journal files the database's mode
    conn = sqlite3.connect(root / "sources.db", timeout=30)
    conn.execute(SOURCES_SCHEMA)
    return conn


def record_sources(folder: Path, block_size: int, sequences: list[tuple[list[int], list[tuple[int, int]]]]) -> None:
    """`folder`: a disk cache's folder (<store>/kv/<model fingerprint>); `sequences`: (token ids,
    [(first token of a source, its chunk id)]) of what was answered."""
    from kb.rag.radix import ROOT_HASH, chain

    rows = set()
    for ids, spans in sequences:
        digest = ROOT_HASH
        for end in range(block_size, len(ids) + 1, block_size):
            digest = chain(digest, tuple(ids[end - block_size:end]))
            rows.update((folder.name, digest.hex(), cid) for start, cid in spans if start < end)
    try:
        conn = _sources_db(folder.parent)
        try:
            with conn:
                conn.executemany("INSERT OR IGNORE INTO block_chunks VALUES (?, ?, ?)", sorted(rows))
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        if not is_damage(e):
            raise
        drop_all(folder.parent)  # the blocks' sources are lost: none of them can be pruned any more


def drop_all(root: Path) -> int:
    """Delete a store's whole KV cache (its sources.db is damaged); returns the block files removed.
    Blocks are only a cache: they are computed again when needed."""
    removed = sum(1 for _ in root.glob("*/*/*.npz"))
    shutil.rmtree(root, ignore_errors=True)
    return removed


def prune_sources(root: Path, live: Callable[[list[int]], list[int]]) -> int:
    """Delete the blocks under `root` (a store's kv folder) computed from chunks that `live`
    (chunk ids -> the subset that still exists) no longer knows; returns how many files."""
    if not (root / "sources.db").is_file():
        return 0
    try:
        return _prune(root, live)
    except sqlite3.DatabaseError as e:
        if not is_damage(e):
            raise
        return drop_all(root)


def _prune(root: Path, live: Callable[[list[int]], list[int]]) -> int:
    conn = _sources_db(root)
    try:
        known = [r[0] for r in conn.execute("SELECT DISTINCT chunk_id FROM block_chunks")]
        gone = sorted(set(known) - set(live(known)))
        removed = 0
        for i in range(0, len(gone), 500):
            part = gone[i:i + 500]
            marks = ",".join("?" * len(part))
            for fp, digest in conn.execute(f"SELECT DISTINCT fingerprint, digest FROM block_chunks "
                                           f"WHERE chunk_id IN ({marks})", part).fetchall():
                path = block_path(root / fp, digest)
                if path.exists():
                    path.unlink()
                    removed += 1
                conn.execute("DELETE FROM block_chunks WHERE fingerprint = ? AND digest = ?", (fp, digest))
        conn.commit()
        return removed
    finally:
        conn.close()
