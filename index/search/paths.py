"""Chunks by their document's path: the `--path GLOB` filter, and each chunk's path for
evaluation. Cached per store data version, so a concurrent `kb index` is seen on the next query."""

from __future__ import annotations

import numpy as np

from kb.index.store import Store, lookup


class ChunkPaths:
    def __init__(self, store: Store):
        self.store = store
        self._globs: dict[tuple, np.ndarray] = {}
        self._relative: tuple[int, dict[int, str]] | None = None

    def matching(self, glob: str) -> np.ndarray:
        """Ids of chunks whose document path, relative to its indexed folder, matches the SQLite GLOB."""
        key = (glob, self.store.data_version)
        if key not in self._globs:
            self._globs[key] = np.array(lookup.chunks_matching(self.store.conn, glob), dtype=np.int64)
        return self._globs[key]

    def mask(self, chunk_ids: np.ndarray, version: int, glob: str) -> np.ndarray:
        """`matching(glob)` as a mask over `chunk_ids` (a BM25 cache's rows, of data `version`)."""
        key = ("mask", glob, version)
        if key not in self._globs:
            self._globs[key] = np.isin(chunk_ids, self.matching(glob))
        return self._globs[key]

    def relative(self) -> dict[int, str]:
        """chunk id -> its document's path relative to the indexed folder."""
        version = self.store.data_version
        if self._relative is None or self._relative[0] != version:
            self._relative = (version, lookup.chunk_paths(self.store.conn))
        return self._relative[1]
