"""The store: one directory per knowledge base, one SQLite database in it as the source of truth.

Everything else in the directory (the BM25 score cache, later vector indexes) is derived from the
database, tagged with the `data_version` it reflects, and rebuilt when the tag does not match.
"""

from __future__ import annotations

import json
import os
import sqlite3
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from kb.errors import NotFound, StoreIncompatible, UsageError
from kb.index.migrations import MIGRATIONS, SCHEMA_VERSION

DB_FILE = "kb.sqlite"
# A chunk row (text and token ids) is 2-3 KB: with 4 KB pages most spilled into overflow pages.
# Writing 700 files' chunks on the 2-core machine, best of three: 0.64 s with 4 KB, 0.47 s with 16 KB.
PAGE_SIZE = 16384


def default_db_dir() -> Path:
    """`$KB_DB`, else `$XDG_DATA_HOME/kb/default`, else `~/.local/share/kb/default`."""
    if os.environ.get("KB_DB"):
        return Path(os.environ["KB_DB"]).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "kb" / "default"


# The stores this process opened: when a command ends in an error nobody expected, the CLI asks
# SQLite whether their files are sound (`damage`), since broken pages can read back as nonsense.
OPENED: set[Path] = set()


def is_damage(e: sqlite3.DatabaseError) -> bool:
    """SQLite found a database file's pages or text broken (not a lock, a full disk, an I/O error)."""
    text = str(e).lower()
    return any(m in text for m in ("malformed", "not a database", "could not decode", "corrupt"))


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
        d = Path(directory).expanduser() if directory else default_db_dir()
        db = d / DB_FILE
        new = not db.exists()
        if new:
            if not create:
                raise NotFound(f"no knowledge base at {d} (run `kb index PATH --db {d}` first)")
            try:
                _create_private(d, db)
            except OSError as e:
                raise UsageError(f"cannot create a store at {d}: {e.strerror or e}") from e
        try:
            conn = sqlite3.connect(db, isolation_level=None, timeout=30)
            if new:  # before the first table; a store keeps the page size it was created with
                conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            store = cls(d.resolve(), conn)
            OPENED.add(store.dir)
            store._migrate()
        except sqlite3.DatabaseError as e:
            raise StoreIncompatible(f"{db} is not a usable kb database ({e})") from e
        return store

    def close(self) -> None:
        self.conn.close()

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreIncompatible(
                f"store {self.dir} has schema {version}, newer than this kb understands "
                f"({SCHEMA_VERSION}); upgrade kb"
            )
        if version == SCHEMA_VERSION:
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated meanwhile.
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            for number in range(version, SCHEMA_VERSION):
                step = MIGRATIONS[number]
                if callable(step):
                    step(self.conn)
                else:
                    for statement in _statements(step):
                        self.conn.execute(statement)
            self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    @contextmanager
    def transaction(self, data: bool = True) -> Iterator[sqlite3.Connection]:
        """One atomic write. A `data` transaction that changed rows bumps `data_version`, which
        marks derived files stale; bookkeeping (run history, settings) passes data=False."""
        self.conn.execute("BEGIN IMMEDIATE")
        before = self.conn.total_changes
        try:
            yield self.conn
            if data and self.conn.total_changes != before:
                self.conn.execute(
                    "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'data_version'"
                )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

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

    def fingerprint(self) -> dict | None:
        raw = self.meta("fingerprint")
        return json.loads(raw) if raw else None

    def path(self, name: str) -> Path:
        """A derived file beside the database."""
        return self.dir / name


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements (executescript would commit our transaction)."""
    buf = ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n;"):
                yield buf
            buf = ""


def _create_private(directory: Path, db: Path) -> None:
    """Create the store directory and database file readable by the owner only.

    SQLite gives its -wal and -shm files the database file's mode, so they stay private too.
    """
    if not directory.exists():
        directory.mkdir(parents=True, mode=0o700)
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
    os.close(os.open(db, os.O_CREAT | os.O_WRONLY, 0o600))


# What reading a derived .npz file that is missing, torn, damaged inside (a member failing its
# CRC) or foreign raises: the caller rebuilds it from SQLite.
BROKEN_FILE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def write_atomic(path: Path, data: bytes) -> None:
    """Write a derived file so that a reader sees the old or the new one, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
