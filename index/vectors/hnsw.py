"""HNSW through hnswlib (inner product). Deleted chunks are marked deleted; when they pass a
fifth of the live ones the graph is rebuilt from the live vectors (compaction)."""

from __future__ import annotations

import os
import tempfile

import numpy as np

M, EF_CONSTRUCTION, EF_SEARCH = 32, 200, 128
COMPACT_AT = 0.2


class HnswIndex:
    kind = "hnsw"

    def __init__(self, index, ids: np.ndarray, deleted: int):
        self._index, self._ids, self._deleted = index, ids, deleted

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self._ids))
        if k == 0:
            return self._ids[:0], np.zeros(0, dtype=np.float32)
        self._index.set_ef(max(EF_SEARCH, 2 * k))
        labels, dists = self._index.knn_query(query.reshape(1, -1).astype(np.float32), k=k)
        return labels[0].astype(np.int64), 1.0 - dists[0]  # hnswlib's "ip" distance is 1 - <q, v>

    def ids(self) -> np.ndarray:
        return self._ids

    def update(self, add_ids, add_vecs, remove_ids) -> None:
        for label in remove_ids:
            self._index.mark_deleted(int(label))
        self._deleted += len(remove_ids)
        live = np.setdiff1d(self._ids, remove_ids, assume_unique=True)
        if self._deleted > COMPACT_AT * max(len(live), 1):
            vecs = np.asarray(self._index.get_items(live), dtype=np.float32).reshape(len(live), -1)
            fresh = build(np.concatenate([live, add_ids]), np.concatenate([vecs, add_vecs]))
            self._index, self._ids, self._deleted = fresh._index, fresh._ids, 0
            return
        if len(add_ids):
            need = self._index.get_current_count() + len(add_ids)
            if need > self._index.get_max_elements():
                self._index.resize_index(max(need, 2 * self._index.get_max_elements()))
            self._index.add_items(add_vecs.astype(np.float32), add_ids.astype(np.int64))
        self._ids = np.sort(np.concatenate([live, add_ids]))

    def state(self) -> dict[str, np.ndarray]:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "hnsw.bin")
            self._index.save_index(path)
            blob = np.fromfile(path, dtype=np.uint8)
        return {"graph": blob, "ids": self._ids, "deleted": np.array(self._deleted),
                "max_elements": np.array(self._index.get_max_elements())}


def _new(dims: int, capacity: int):
    import hnswlib

    index = hnswlib.Index(space="ip", dim=dims)
    index.init_index(max_elements=max(capacity, 16), ef_construction=EF_CONSTRUCTION, M=M, random_seed=0)
    return index


def build(ids: np.ndarray, vecs: np.ndarray) -> HnswIndex:
    index = _new(vecs.shape[1], len(ids) + len(ids) // 4)
    if len(ids):
        index.add_items(vecs.astype(np.float32), ids.astype(np.int64))
    return HnswIndex(index, np.sort(ids), 0)


def restore(arrays: dict[str, np.ndarray], dims: int) -> HnswIndex:
    import hnswlib

    index = hnswlib.Index(space="ip", dim=dims)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "hnsw.bin")
        arrays["graph"].tofile(path)
        index.load_index(path, max_elements=int(arrays["max_elements"]))
    return HnswIndex(index, arrays["ids"], int(arrays["deleted"]))
