"""Which document chunks each KV block on disk was computed from (kv/sources.db), so that
`kb index` can drop the blocks of chunks that are gone. A block's keys and values depend on every
token before its end, so on each source whose text starts before it. Blocks stay valid across
reindexing otherwise: they are keyed by their tokens, not by the index's state.

A block is named by the hash chain of every token up to its end (`chain` from `ROOT_HASH`, one
step per block): the prefix cache in memory (kb.rag.radix) and the files on disk share the names.
No torch here: `kb index` imports it.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Callable

from kb.common import ROOT_HASH, chain, is_damage, private_dir, private_file
from kb.errors import StoreIncompatible
from kb.index.store import migrations

SOURCES_DB = "sources.db"
KV_DIR = "kv"  # a store's KV cache: <store>/kv/sources.db and <store>/kv/<model fingerprint>/


def block_path(folder: Path, digest: str) -> Path:
    return folder / digest[:2] / f"{digest}.npz"


def record_sources(folder: Path, block_size: int, sequences: list[tuple[list[int], list[tuple[int, int]]]]) -> None:
    """`folder`: a disk cache's folder (<store>/kv/<model fingerprint>); `sequences`: (token ids,
    [(first token of a source, its chunk id)]) of what was answered."""
    rows = set()
    for ids, spans in sequences:
        digest = ROOT_HASH
        for end in range(block_size, len(ids) + 1, block_size):
            digest = chain(digest, tuple(ids[end - block_size:end]))
            rows.update((folder.name, digest.hex(), cid) for start, cid in spans if start < end)
    try:
        conn = _open(folder.parent)
        try:
            with conn:
                conn.executemany("INSERT OR IGNORE INTO block_chunks VALUES (?, ?, ?)", sorted(rows))
        finally:
            conn.close()
    except StoreIncompatible:
        return  # a newer kb's cache: its blocks are unknown to this kb, and left to it
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
    if not (root / SOURCES_DB).is_file():
        return 0
    try:
        return _prune(root, live)
    except StoreIncompatible:
        return 0  # a newer kb's cache: left to it
    except sqlite3.DatabaseError as e:
        if not is_damage(e):
            raise
        return drop_all(root)


def check(conn: sqlite3.Connection) -> str:
    """SQLite's quick check of an open sources.db ('ok' if it passes), its table read once."""
    verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
    conn.execute("SELECT count(*) FROM block_chunks").fetchone()
    return verdict


def _open(root: Path) -> sqlite3.Connection:
    """sources.db under `root` (made private), migrated to this kb's schema."""
    private_dir(root)
    private_file(root / SOURCES_DB)  # SQLite gives its journal files the database's mode
    conn = sqlite3.connect(root / SOURCES_DB, isolation_level=None, timeout=30)
    try:
        have = migrations.version(conn)
        if have > len(migrations.KV_SOURCES):
            raise StoreIncompatible(f"{root / SOURCES_DB} has schema {have}, newer than this kb understands; "
                                    "upgrade kb")
        if have < len(migrations.KV_SOURCES):
            migrations.apply(conn, migrations.KV_SOURCES)
    except BaseException:
        conn.close()
        raise
    conn.isolation_level = ""  # `with conn:` below commits each write as one transaction
    return conn


def _prune(root: Path, live: Callable[[list[int]], list[int]]) -> int:
    conn = _open(root)
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
