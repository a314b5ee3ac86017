"""The store: one directory per knowledge base, one SQLite database in it as the source of truth.

Everything else in the directory (the BM25 score cache, the vector index, `kb ask`'s KV blocks) is
derived from the database, tagged with the `data_version` it reflects, and rebuilt when the tag
does not match.

This package is kb's data layer: every SQL statement of the library is in it, grouped by table
family (documents, terms, embeddings, runs, health, kv, lookup), each a module of functions that
take a connection (inside the caller's transaction where they write) and return plain values.
This module opens, creates and migrates a store and holds its transactions and settings (meta).
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from kb.errors import NotFound, StoreIncompatible, StoreReadOnly
from kb.index.store import migrations, runs
from kb.index.store.connect import connect, connect_readonly, create_database, size, store_error, unwritable_error
from kb.index.store.migrations import SCHEMA_VERSION

DB_FILE = "kb.sqlite"


def default_db_dir() -> Path:
    """`$KB_DB`, else `$XDG_DATA_HOME/kb/default`, else `~/.local/share/kb/default`."""
    if os.environ.get("KB_DB"):
        return Path(os.environ["KB_DB"]).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "kb" / "default"


# The stores this process opened: when a command ends in an error nobody expected, the CLI asks
# SQLite whether their files are sound (`damage`), since broken pages can read back as nonsense.
OPENED: set[Path] = set()


def damage(directory: Path) -> str | None:
    """SQLite's quick check of a store's database file: None if it passes, else its first complaint."""
    conn = None
    try:
        conn = sqlite3.connect(f"file:{directory / DB_FILE}?mode=ro", uri=True, timeout=5)
        row = conn.execute("PRAGMA quick_check(1)").fetchone()
    except sqlite3.DatabaseError as e:
        return str(e)
    finally:
        if conn is not None:
            conn.close()
    return None if row and row[0] == "ok" else str(row[0] if row else "no answer")


class Store:
    """A connection to one knowledge base. Writes happen inside `transaction()` only."""

    def __init__(self, directory: Path, conn: sqlite3.Connection):
        self.dir = directory
        self.conn = conn

    @classmethod
    def open(cls, directory: Path | str | None = None, create: bool = False) -> "Store":
        """Open a store to read it, or (`create`, `kb index`) to write it, creating it if need be.
        A store that cannot be written (a read-only folder or file, a full disk) still opens for
        reading; a writer is told so: StoreReadOnly or DiskFull, before anything is changed."""
        d = Path(directory).expanduser() if directory else default_db_dir()
        db = d / DB_FILE
        if not db.exists():
            if not create:
                raise NotFound(f"no knowledge base at {d} (run `kb index PATH --db {d}` first)")
            create_database(d, db)
        elif db.stat().st_size == 0 and not size(d / (DB_FILE + "-wal")):
            raise StoreIncompatible(f"the store is damaged ({db} is empty: a new store is never written "
                                    "so); move its folder aside and run `kb index` again, or restore a backup")
        try:
            store = cls(d.resolve(), connect(db))
        except sqlite3.OperationalError as e:
            if create or unwritable_error(e, writing=True) is None:
                raise store_error(db, e, create) from e
            store = cls(d.resolve(), connect_readonly(db))
            store.readonly = True
        OPENED.add(store.dir)
        try:
            store._migrate()
        except sqlite3.DatabaseError as e:
            raise store_error(db, e, create) from e
        return store

    readonly = False  # opened read-only: the database (or its folder, or the disk) takes no writes

    def probe_write(self) -> None:
        """Fail before a run starts if the database takes no writes (SQLite opens a read-only file
        read-only without a word). Call it holding the index lock: it waits for other writers."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("ROLLBACK")
        except sqlite3.OperationalError as e:
            raise store_error(self.path(DB_FILE), e, True) from e

    def close(self) -> None:
        self.conn.close()

    def _migrate(self) -> None:
        version = migrations.version(self.conn)
        if version > SCHEMA_VERSION:
            raise StoreIncompatible(
                f"store {self.dir} has schema {version}, newer than this kb understands "
                f"({SCHEMA_VERSION}); upgrade kb"
            )
        if version == SCHEMA_VERSION:
            return
        if self.readonly:
            raise StoreReadOnly(f"store {self.dir} needs an upgrade to schema {SCHEMA_VERSION} but cannot be "
                                "written; run `kb index` once where it is writable")
        migrations.apply(self.conn, migrations.STORE)

    @contextmanager
    def transaction(self, data: bool = True) -> Iterator[sqlite3.Connection]:
        """One atomic write. A `data` transaction that changed rows bumps `data_version`, which
        marks derived files stale; bookkeeping (run history, settings) passes data=False. Inside
        `held()` it is a savepoint of the held transaction."""
        nested = self._held
        self.conn.execute("SAVEPOINT kb_write" if nested else "BEGIN IMMEDIATE")
        before = self.conn.total_changes
        try:
            yield self.conn
            if data and self.conn.total_changes != before:
                self.conn.execute(
                    "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'data_version'"
                )
            self.conn.execute("RELEASE kb_write" if nested else "COMMIT")
        except BaseException:
            if nested and self.conn.in_transaction:
                self.conn.execute("ROLLBACK TO kb_write")
                self.conn.execute("RELEASE kb_write")
            elif not nested:
                self._rollback()
            raise

    _held = False

    @contextmanager
    def held(self) -> Iterator[None]:
        """One transaction around many `transaction()`s (savepoints): readers see none of them
        until all are committed together, and a process killed before that leaves no trace."""
        self.conn.execute("BEGIN IMMEDIATE")
        self._held = True
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        finally:
            self._held = False

    def _rollback(self) -> None:
        # SQLite has already rolled back after some errors (a full disk, an I/O error): a second
        # ROLLBACK would fail and hide the error that matters
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A consistent read of several statements (WAL readers never block the writer)."""
        self.conn.execute("BEGIN")
        try:
            yield self.conn
        finally:
            self.conn.execute("COMMIT")

    @property
    def data_version(self) -> int:
        return int(self.meta("data_version", "0"))

    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        """Call inside a transaction."""
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def vector_setting(self) -> str:
        """The --vector-index this store was last indexed with (auto for a new store). Stores from
        before kb kept it: read off the last finished run (its report's vector_index is null
        for a BM25-only run)."""
        setting = self.meta("vector_index")
        if setting is None:
            stats = runs.last_stats(self.conn)
            setting = "none" if stats is not None and stats.get("vector_index") is None else "auto"
        return setting

    def fingerprint(self) -> dict | None:
        return self.meta_json("fingerprint")

    def meta_json(self, key: str) -> dict | None:
        """A setting kept as JSON (fingerprint, embedding, fusion), None if it is not set."""
        raw = self.meta(key)
        return json.loads(raw) if raw else None

    def path(self, name: str) -> Path:
        """A derived file beside the database."""
        return self.dir / name

    def checkpoint_every(self, pages: int) -> None:
        """How many WAL pages make this connection copy the WAL back into the database."""
        self.conn.execute(f"PRAGMA wal_autocheckpoint={int(pages)}")
