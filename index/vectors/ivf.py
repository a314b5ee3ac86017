"""IVF through faiss (inner product): IVF-Flat, and for very large collections IVF-PQ (dims/4
bytes a vector instead of 4·dims; approximate scores, lower recall: see bench/vectors.py).
Trained on the collection; too small a collection to train on is searched exactly. faiss's GPU
build is used for search when faiss itself reports a GPU."""

from __future__ import annotations

import math

import numpy as np

from kb.index.vectors import flat

MIN_TRAIN = 4_000  # below this, clusters would be too small to be worth it: exact search
PQ_FROM = 2_000_000  # from this size, product-quantised codes (with an exact re-rank)
NPROBE_FRACTION = 1 / 8  # recall@10 0.95 at 1/16 on 58k real-text vectors; see bench/vectors.py


class IvfIndex:
    kind = "ivf"

    def __init__(self, index, ids: np.ndarray):
        self._index, self._ids = index, ids
        self._search = _gpu(index)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self._ids))
        if k == 0:
            return self._ids[:0], np.zeros(0, dtype=np.float32)
        scores, labels = self._search.search(query.reshape(1, -1).astype(np.float32), k)
        keep = labels[0] >= 0
        return labels[0][keep].astype(np.int64), scores[0][keep]

    def ids(self) -> np.ndarray:
        return self._ids

    def update(self, add_ids, add_vecs, remove_ids) -> None:
        import faiss

        if len(remove_ids):
            self._index.remove_ids(faiss.IDSelectorBatch(np.asarray(remove_ids, dtype=np.int64)))
        if len(add_ids):
            self._index.add_with_ids(add_vecs.astype(np.float32), add_ids.astype(np.int64))
        self._ids = np.sort(np.concatenate([np.setdiff1d(self._ids, remove_ids, assume_unique=True), add_ids]))
        self._search = _gpu(self._index)

    def state(self) -> dict[str, np.ndarray]:
        import faiss

        return {"faiss": faiss.serialize_index(self._index), "ids": self._ids}


def _gpu(index):
    import faiss

    if hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:
        try:
            return faiss.index_cpu_to_all_gpus(index)
        except RuntimeError:  # an index type or size faiss's GPU build lacks: search on the CPU
            pass
    return index


def build(ids: np.ndarray, vecs: np.ndarray, pq: bool | None = None):
    """`pq`: product-quantised codes; by default from PQ_FROM vectors."""
    import faiss

    n, dims = vecs.shape
    if n < MIN_TRAIN:
        return flat.build(ids, vecs)
    nlist = int(min(max(4 * math.sqrt(n), 16), n // 39))  # faiss wants ~39 points per centroid
    quantizer = faiss.IndexFlatIP(dims)
    if (n >= PQ_FROM if pq is None else pq) and dims % 4 == 0:
        index = faiss.IndexIVFPQ(quantizer, dims, nlist, dims // 4, 8, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexIVFFlat(quantizer, dims, nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(vecs.astype(np.float32))
    index.nprobe = max(8, int(nlist * NPROBE_FRACTION))
    index.add_with_ids(vecs.astype(np.float32), ids.astype(np.int64))
    return IvfIndex(index, np.sort(ids))


def restore(arrays: dict[str, np.ndarray], dims: int) -> IvfIndex:
    import faiss

    index = faiss.deserialize_index(arrays["faiss"])
    assert index.d == dims
    return IvfIndex(index, arrays["ids"])
