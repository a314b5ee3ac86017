"""Exact inner-product search: one matrix product, in numpy, or through torch on the GPU when
torch is already loaded (it is whenever the encoder is) and sees one."""

from __future__ import annotations

import sys

import numpy as np


def _on_gpu(vecs: np.ndarray):
    torch = sys.modules.get("torch")  # never imported here for its own sake: it costs seconds
    if torch is None or len(vecs) == 0 or not torch.cuda.is_available():
        return None
    return torch.from_numpy(vecs).cuda()


class FlatIndex:
    kind = "flat"

    def __init__(self, ids: np.ndarray, vecs: np.ndarray):
        self._ids, self._vecs = ids, np.ascontiguousarray(vecs, dtype=np.float32)
        self._gpu = _on_gpu(self._vecs)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self._ids) == 0:
            return self._ids[:0], np.zeros(0, dtype=np.float32)
        if self._gpu is not None:
            import torch

            q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32)).to(self._gpu.device)
            top = torch.topk(self._gpu @ q, min(k, len(self._ids)))
            return self._ids[top.indices.cpu().numpy()], top.values.cpu().numpy()
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
        self._gpu = _on_gpu(self._vecs)

    def state(self) -> dict[str, np.ndarray]:
        return {"ids": self._ids, "vecs": self._vecs}


def build(ids: np.ndarray, vecs: np.ndarray) -> FlatIndex:
    return FlatIndex(ids, vecs)


def restore(arrays: dict[str, np.ndarray], dims: int) -> FlatIndex:
    assert arrays["vecs"].shape[1:] == (dims,)
    return FlatIndex(arrays["ids"], arrays["vecs"])
