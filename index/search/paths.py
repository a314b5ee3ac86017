"""Chunks by their document: the scope a search may return (`--path`, `--type`, `--since`), and
each chunk's path for evaluation. Cached per store data version, so a concurrent `kb index` is
seen on the next query."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from kb.errors import UsageError
from kb.index.store import Store, lookup

_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([mhdwy])")
_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


@dataclass(frozen=True)
class Scope:
    """The documents a search may return: path (a GLOB relative to the indexed folder, or a folder
    or file, relative or absolute), kinds (markdown, code, ... or extensions: md, py), modified at
    or after `since` (epoch seconds), and indexed under one of `roots`. Empty: all."""

    path: str | None = None
    kinds: tuple[str, ...] = ()
    since: float | None = None
    roots: tuple[str, ...] = ()  # collections' folders (`-c NAME`): documents indexed under one of them

    def __bool__(self) -> bool:
        return bool(self.path or self.kinds or self.since is not None or self.roots)


def since(text: str, now: float | None = None) -> float:
    """Epoch seconds of `--since`: an age (30m, 12h, 3d, 2w, 1y) or a date (2026-11-01)."""
    m = _AGE.fullmatch(text.strip().lower())
    if m:
        return (now or time.time()) - float(m.group(1)) * _SECONDS[m.group(2)]
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise UsageError(f"--since {text!r}: give an age (30m, 12h, 3d, 2w, 1y) or a date (2026-11-01)") from None


class ChunkPaths:
    def __init__(self, store: Store):
        self.store = store
        self._globs: dict[tuple, np.ndarray] = {}  # by scope and data version
        self._relative: tuple[int, dict[int, str]] | None = None

    def matching(self, scope: Scope) -> np.ndarray:
        """Ids of the chunks of the documents in `scope`."""
        key = (scope, self.store.data_version)
        if key not in self._globs:
            found = lookup.chunks_in(self.store.conn, scope.path, scope.kinds, scope.since, scope.roots)
            self._globs[key] = np.array(found, dtype=np.int64)
        return self._globs[key]

    def mask(self, chunk_ids: np.ndarray, version: int, scope: Scope) -> np.ndarray:
        """`matching(scope)` as a mask over `chunk_ids` (a BM25 cache's rows, of data `version`)."""
        key = ("mask", scope, version)
        if key not in self._globs:
            self._globs[key] = np.isin(chunk_ids, self.matching(scope))
        return self._globs[key]

    def relative(self) -> dict[int, str]:
        """chunk id -> its document's path relative to the indexed folder."""
        version = self.store.data_version
        if self._relative is None or self._relative[0] != version:
            self._relative = (version, lookup.chunk_paths(self.store.conn))
        return self._relative[1]
