"""Exact inner-product search: one matrix product (torch on the GPU when there is one)."""

from __future__ import annotations

import numpy as np

class FlatIndex:
    kind = "flat"

    def __init__(self, ids: np.ndarray, vecs: np.ndarray):
        self._ids, self._vecs = ids, np.ascontiguousarray(vecs, dtype=np.float32)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self._ids) == 0:
            return self._ids[:0], np.zeros(0, dtype=np.float32)
        scores = self._vecs @ query.astype(np.float32)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return self._ids[top], scores[top]

    def ids(self) -> np.ndarray:
        return self._ids

    def update(self, add_ids, add_vecs, remove_ids) -> None:
        keep = ~np.isin(self._ids, remove_ids)
        ids = np.concatenate([self._ids[keep], add_ids])
        vecs = np.concatenate([self._vecs[keep], add_vecs])
        order = np.argsort(ids, kind="stable")
        self._ids, self._vecs = ids[order], np.ascontiguousarray(vecs[order])

    def state(self) -> dict[str, np.ndarray]:
        return {"ids": self._ids, "vecs": self._vecs}


def build(ids: np.ndarray, vecs: np.ndarray) -> FlatIndex:
    return FlatIndex(ids, vecs)


def restore(arrays: dict[str, np.ndarray], dims: int) -> FlatIndex:
    assert arrays["vecs"].shape[1:] == (dims,)
    return FlatIndex(arrays["ids"], arrays["vecs"])
