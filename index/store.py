"""The store: one directory per knowledge base, one SQLite database in it as the source of truth.

Everything else in the directory (the BM25 score cache, later vector indexes) is derived from the
database, tagged with the `data_version` it reflects, and rebuilt when the tag does not match.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from kb.errors import DiskFull, KbError, NotFound, StoreIncompatible, StoreReadOnly, UsageError
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
        """Open a store to read it, or (`create`, `kb index`) to write it, creating it if need be.
        A store that cannot be written (a read-only folder or file, a full disk) still opens for
        reading; a writer is told so: StoreReadOnly or DiskFull, before anything is changed."""
        d = Path(directory).expanduser() if directory else default_db_dir()
        db = d / DB_FILE
        if not db.exists():
            if not create:
                raise NotFound(f"no knowledge base at {d} (run `kb index PATH --db {d}` first)")
            _create(d, db)
        elif db.stat().st_size == 0 and not _size(d / (DB_FILE + "-wal")):
            raise StoreIncompatible(f"the store is damaged ({db} is empty: a new store is never written "
                                    "so); move its folder aside and run `kb index` again, or restore a backup")
        try:
            store = cls(d.resolve(), _connect(db))
        except sqlite3.OperationalError as e:
            if create or unwritable_error(e, writing=True) is None:
                raise _store_error(db, e, create) from e
            store = cls(d.resolve(), connect_readonly(db))
            store.readonly = True
        OPENED.add(store.dir)
        try:
            store._migrate()
        except sqlite3.DatabaseError as e:
            raise _store_error(db, e, create) from e
        return store

    readonly = False  # opened read-only: the database (or its folder, or the disk) takes no writes

    def probe_write(self) -> None:
        """Fail before a run starts if the database takes no writes (SQLite opens a read-only file
        read-only without a word). Call it holding the index lock: it waits for other writers."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("ROLLBACK")
        except sqlite3.OperationalError as e:
            raise _store_error(self.path(DB_FILE), e, True) from e

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
        if self.readonly:
            raise StoreReadOnly(f"store {self.dir} needs an upgrade to schema {SCHEMA_VERSION} but cannot be "
                                "written; run `kb index` once where it is writable")
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
            self._rollback()
            raise

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
            row = self.conn.execute(
                "SELECT stats FROM runs WHERE stats IS NOT NULL ORDER BY id DESC LIMIT 1").fetchone()
            setting = "none" if row and json.loads(row[0]).get("vector_index") is None else "auto"
        return setting

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


def _connect(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        conn.close()
        raise
    return conn


def connect_readonly(db: Path) -> sqlite3.Connection:
    """For reading a store that takes no writes. Where SQLite cannot create the -shm file a WAL
    database needs even to be read (a folder this process cannot write, a full disk) and no -wal
    file is left (the last writer checkpointed it away), nothing can be writing: the file is
    opened as immutable (a store in a read-only folder is a copy or a backup)."""
    uri = db.resolve().as_uri()
    conn = sqlite3.connect(uri + "?mode=ro", uri=True, isolation_level=None, timeout=30)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        conn.close()
        if _size(db.with_name(db.name + "-wal")):
            raise
    return sqlite3.connect(uri + "?immutable=1", uri=True, isolation_level=None)


def unwritable_error(e: sqlite3.DatabaseError, where: str = "the store", writing: bool = False) -> KbError | None:
    """The named error for SQLite's complaint that a store takes no writes (read-only, full disk),
    or None for any other. `writing`: the store was being opened to write, where 'unable to open'
    means the folder refuses the files SQLite makes beside the database."""
    text = str(e).lower()
    if "readonly" in text or "read-only" in text or (writing and "unable to open" in text):
        return StoreReadOnly(f"{where} is read-only ({e}): it can be searched, not indexed")
    if "disk is full" in text or "disk i/o" in text:
        return DiskFull(f"the disk holding {where} is full or failing ({e}); nothing was lost: free some "
                        "space and run again")
    return None


def _store_error(db: Path, e: sqlite3.DatabaseError, writing: bool) -> Exception:
    """The named error for why SQLite could not use a store."""
    named = unwritable_error(e, f"the store {db.parent}", writing)
    if named is not None:
        return named
    if is_damage(e):
        return StoreIncompatible(f"the store is damaged ({e}); move its folder aside and run `kb index` "
                                 "again, or restore a backup")
    return StoreIncompatible(f"{db} is not a usable kb database ({e})")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _create(directory: Path, db: Path) -> None:
    """Create a new store: the folder (made private) and a complete empty database, written under
    a temporary name and linked into place, so that a kb.sqlite is never half made (an empty one
    is damage, not a new store). SQLite gives its -wal and -shm files the database file's mode,
    so they stay private too."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask; a folder made earlier too
        tmp = directory / f".{DB_FILE}.{os.getpid()}.new"
        os.close(os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(f"cannot create a store at {directory}: {e.strerror}") from e
        raise UsageError(f"cannot create a store at {directory}: {e.strerror or e}") from e
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # before the first table: a store keeps it
            Store(directory, conn)._migrate()
        finally:
            conn.close()
        try:
            os.link(tmp, db)
        except FileExistsError:
            pass  # another process made it first: theirs is as good
    except sqlite3.OperationalError as e:
        raise _store_error(db, e, True) from e
    finally:
        tmp.unlink(missing_ok=True)


# What reading a derived .npz file that is missing, torn, damaged inside (a member failing its
# CRC) or foreign raises: the caller rebuilds it from SQLite.
BROKEN_FILE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def private_dir(path: Path) -> None:
    """Make a folder and any missing parents readable by the owner only (mkdir's parents=True
    gives the parents the umask's mode)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(folder, 0o700)


def private_file(path: Path) -> None:
    """Create `path` (if it is not there) readable by the owner only."""
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


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
