"""One writer per store: `kb index` holds an flock on `index.lock` beside the database. The kernel
drops the lock when the holder dies, even by SIGKILL, so a crashed run never wedges cron."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from kb.errors import StoreBusy, StoreReadOnly


class IndexLock:
    def __init__(self, directory: Path, timeout: float):
        self.path = directory / "index.lock"
        self.timeout = timeout
        self.fd: int | None = None

    def __enter__(self) -> "IndexLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            if isinstance(e, PermissionError) or e.errno == errno.EROFS:
                raise StoreReadOnly(f"the store {self.path.parent} is read-only ({e.strerror}): it can be "
                                    "searched, not indexed") from e
            raise
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    os.close(fd)
                    raise StoreBusy(
                        f"another kb index (pid {holder}) is writing to {self.path.parent}; "
                        f"gave up after {self.timeout:g}s (use --wait to wait longer)"
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        assert self.fd is not None
        os.close(self.fd)  # closing releases the flock
        self.fd = None
