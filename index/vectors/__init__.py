"""Vector indexes behind one interface, persisted beside the database.

Each index is one file written atomically, holding its own chunk ids and a tag (kind, encoder
key, dims, data version). Opening compares the tag and the ids with SQLite: the same version is
used as is; another version is caught up (ids removed or added since); a foreign or unreadable
file is rebuilt from SQLite. Nothing stale is ever searched.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from kb.common import BROKEN_FILE, write_atomic
from kb.errors import UsageError
from kb.index.store import Store, embeddings

KINDS = ("auto", "flat", "hnsw", "ivf")
FILE = "vectors.npz"


class VectorIndex(Protocol):
    kind: str

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, inner-product scores), best first, for one (dims,) query."""

    def ids(self) -> np.ndarray:
        """The chunk ids in the index, sorted."""

    def update(self, add_ids: np.ndarray, add_vecs: np.ndarray, remove_ids: np.ndarray) -> None: ...

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that `restore` turns back into the same index."""


@dataclass(frozen=True)
class Tag:
    kind: str
    key: str
    dims: int
    version: int


def choose(kind: str, n: int) -> str:
    """`auto`: exact search while it is fast enough, HNSW up to a million vectors, then IVF."""
    if kind not in KINDS:
        raise UsageError(f"--vector-index must be one of {', '.join(KINDS)}")
    if kind != "auto":
        return kind
    return "flat" if n < 20_000 else ("hnsw" if n < 1_000_000 else "ivf")


def _module(kind: str):
    # Imported lazily: hnswlib and faiss load only for the index that is used.
    if kind == "flat":
        from kb.index.vectors import flat as module
    elif kind == "hnsw":
        from kb.index.vectors import hnsw as module
    else:
        from kb.index.vectors import ivf as module
    return module


def load(store: Store) -> tuple[Tag, VectorIndex] | None:
    try:
        with np.load(store.path(FILE), allow_pickle=False) as f:
            tag = Tag(**json.loads(str(f["tag"])))
            arrays = {k: f[k] for k in f.files if k != "tag"}
        return tag, _module(tag.kind).restore(arrays, tag.dims)
    except (*BROKEN_FILE, TypeError, RuntimeError):
        return None  # missing, torn, damaged, foreign: the caller rebuilds


def peek(store: Store) -> dict | None:
    """The tag and size of the index file, without loading hnswlib or faiss."""
    try:
        with np.load(store.path(FILE), allow_pickle=False) as f:
            return {**json.loads(str(f["tag"])), "count": int(len(f["ids"]))}
    except BROKEN_FILE:
        return None


def save(store: Store, tag: Tag, index: VectorIndex) -> None:
    buf = io.BytesIO()
    np.savez(buf, tag=np.array(json.dumps(tag.__dict__)), **index.state())
    write_atomic(store.path(FILE), buf.getvalue())


def current(store: Store, key: str, dims: int, kind: str = "auto", persist: bool = True,
            known: Mapping[str, np.ndarray] | None = None) -> tuple[Tag, VectorIndex]:
    """The store's vector index for encoder `key`, up to date with SQLite. `known`: vectors by
    text hash that the caller has just written (`kb index`), so that they need not be read back;
    an index file of an older version reads only the vectors added since."""
    loaded = load(store)
    version = store.data_version
    if loaded and loaded[0].key == key and loaded[0].version == version and kind in ("auto", loaded[0].kind):
        return loaded
    catch_up = vecs = None
    with store.snapshot() as conn:  # the reads only: building the index happens outside it
        version = store.data_version
        ids, hashes = embeddings.listing(conn, key)
        chosen = choose(kind, len(ids))
        if loaded and loaded[0].key == key and loaded[0].kind == chosen and loaded[0].dims == dims:
            have = loaded[1].ids()
            new = np.setdiff1d(ids, have, assume_unique=True)
            rows = np.searchsorted(ids, new).tolist()
            catch_up = (new, embeddings.vectors(conn, key, [hashes[r] for r in rows], dims, known or {}),
                        np.setdiff1d(have, ids, assume_unique=True))
        elif known:
            vecs = embeddings.vectors(conn, key, hashes, dims, known)
    if catch_up is not None:
        index = loaded[1]
        index.update(*catch_up)
    elif vecs is not None:
        index = _module(chosen).build(ids, vecs)
    else:  # nothing in hand: one scan of the table
        version, ids, vecs = embeddings.matrix(store, key, dims)
        index = _module(choose(kind, len(ids))).build(ids, vecs)
    tag = Tag(index.kind, key, dims, version)  # ivf falls back to flat on tiny collections
    if persist:
        try:
            save(store, tag, index)
        except OSError:
            pass  # read-only store: searched from memory
    return tag, index
