"""Opening a store's database file: creating it whole, connecting to write or (where it takes
no writes) to read, checkpointing its WAL, and the named errors for SQLite's complaints."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from kb.common import is_damage
from kb.errors import DiskFull, KbError, StoreIncompatible, StoreReadOnly, UsageError
from kb.index.store import migrations

# A chunk row (text and token ids) is 2-3 KB: with 4 KB pages most spilled into overflow pages.
# Writing 700 files' chunks on the 2-core machine, best of three: 0.64 s with 4 KB, 0.47 s with 16 KB.
PAGE_SIZE = 16384


def connect(db: Path) -> sqlite3.Connection:
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
        if size(db.with_name(db.name + "-wal")):
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


def store_error(db: Path, e: sqlite3.DatabaseError, writing: bool) -> Exception:
    """The named error for why SQLite could not use a store."""
    named = unwritable_error(e, f"the store {db.parent}", writing)
    if named is not None:
        return named
    if is_damage(e):
        return StoreIncompatible(f"the store is damaged ({e}); move its folder aside and run `kb index` "
                                 "again, or restore a backup")
    return StoreIncompatible(f"{db} is not a usable kb database ({e})")


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def create_database(directory: Path, db: Path) -> None:
    """Create a new store: the folder (made private) and a complete empty database, written under
    a temporary name and linked into place, so that a kb.sqlite is never half made (an empty one
    is damage, not a new store). SQLite gives its -wal and -shm files the database file's mode,
    so they stay private too."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask; a folder made earlier too
        tmp = directory / f".{db.name}.{os.getpid()}.new"
        os.close(os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(f"cannot create a store at {directory}: {e.strerror}") from e
        raise UsageError(f"cannot create a store at {directory}: {e.strerror or e}") from e
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # before the first table: a store keeps it
            migrations.apply(conn, migrations.STORE)
        finally:
            conn.close()
        try:
            os.link(tmp, db)
        except FileExistsError:
            pass  # another process made it first: theirs is as good
    except sqlite3.OperationalError as e:
        raise store_error(db, e, True) from e
    finally:
        tmp.unlink(missing_ok=True)


def checkpoint(db: Path) -> None:
    """Copy the WAL back into the database file (PASSIVE: without waiting for readers), on a
    connection of its own so that it can run on a thread beside the writer."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        conn.close()
