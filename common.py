"""Helpers every layer shares and that belong to none of them: derived files written atomically
and privately, what a damaged SQLite file or a broken derived file looks like, and keeping
third-party libraries quiet and offline, the names of KV blocks. Standard library only:
importing it costs nothing.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import struct
import zipfile
from pathlib import Path

# What reading a derived .npz file that is missing, torn, damaged inside (a member failing its
# CRC) or foreign raises: the caller rebuilds it from SQLite.
BROKEN_FILE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def is_damage(e: sqlite3.DatabaseError) -> bool:
    """SQLite found a database file's pages or text broken (not a lock, a full disk, an I/O error)."""
    text = str(e).lower()
    return any(m in text for m in ("malformed", "not a database", "could not decode", "corrupt"))


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


def quiet_transformers() -> None:
    """No hub access and no progress bars or info logs: kb runs from cron, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


# The name of a block of KV on disk and in the prefix cache: a hash chain over every token up to
# the block's end, one step per block, so that a block's name says which prefix it was computed
# from (the prefix cache in kb.rag and the KV provenance in kb.index.store share it).
ROOT_HASH = b"kb-prefix-v1"


def chain(parent: bytes, tokens: tuple[int, ...]) -> bytes:
    """The digest of a block of `tokens` that follows the prefix whose digest is `parent`."""
    return hashlib.sha256(parent + struct.pack(f"<{len(tokens)}I", *tokens)).digest()  # 4 bytes each, little-endian
