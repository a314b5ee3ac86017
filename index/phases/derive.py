"""Derive: the files derived from the store brought up to date with it, now that its data is
final: the BM25 cache (started on a thread as soon as writing is over: it needs only the
postings), the vector index, the WAL copied back into the database, and `kb ask`'s KV blocks of
chunks this run removed deleted. Each is rebuilt only if this run changed something; their reads,
numpy work and writes overlap.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Mapping

import numpy as np

from kb.index.bm25 import Bm25Cache
from kb.index.phases import Events, PhaseEvent
from kb.index.store import DB_FILE, Store, documents
from kb.index.store.connect import checkpoint
from kb.index.store.kv import KV_DIR, prune_sources


def start_bm25(pool: ThreadPoolExecutor, store: Store) -> Future:
    """The BM25 cache, built on `pool` (a connection of its own: it runs in a thread)."""

    def build() -> Bm25Cache:
        own = Store.open(store.dir)
        try:
            return Bm25Cache.current(own)
        finally:
            own.close()
    return pool.submit(build)


def derive(store: Store, pool: ThreadPoolExecutor, bm25: Future, vectors: tuple | None,
           events: Events) -> str | None:
    """Finish the derived files; `bm25`: start_bm25's future; `vectors`: (encoder EmbedConfig,
    vector index kind, vectors this run wrote by text hash) or None for a BM25-only store.
    Returns the kind of vector index in use."""
    t0 = time.perf_counter()
    jobs = [bm25, pool.submit(checkpoint, store.path(DB_FILE))]
    kind = None
    if vectors is not None:
        kind = _vector_index(store, *vectors)
    for job in jobs:
        job.result()
    _retag_bm25(store, bm25.result())
    pruned = prune_kv(store)
    events(PhaseEvent("derive", round(time.perf_counter() - t0, 3), {"kv_blocks_pruned": pruned}))
    return kind


def _vector_index(store: Store, embed_cfg, kind: str, known: Mapping[str, np.ndarray]) -> str:
    from kb.embed.encoder import describe
    from kb.index import vectors

    spec = describe(embed_cfg)
    tag, _ = vectors.current(store, spec.key, spec.dims, kind, known=known)
    return tag.kind


def _retag_bm25(store: Store, cache: Bm25Cache) -> None:
    """The BM25 cache was built once writing was over; the vectors written since then moved the
    data version but changed no posting: the same cache, tagged with today's version."""
    version = store.data_version
    if cache.version != version:
        cache.version = version
        try:
            cache.save(store)
        except OSError:
            pass  # the next query rebuilds it


def prune_kv(store: Store) -> int:
    """Drop `kb ask`'s cached KV blocks computed from chunks that are gone; how many files."""
    return prune_sources(store.path(KV_DIR), lambda ids: documents.existing_chunks(store.conn, ids))
