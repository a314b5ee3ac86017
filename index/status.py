"""`kb status`: what a store holds and how it was built."""

from __future__ import annotations

import fcntl
import json
import os

from kb.index.bm25 import CACHE_FILE
from kb.index.store import DB_FILE, Store, documents, embeddings, migrations, runs, terms


def status(store: Store) -> dict:
    count = documents.counts(store.conn)
    return {
        "db": str(store.dir),
        "schema": migrations.version(store.conn),
        "data_version": store.data_version,
        "documents": count["documents"],
        "skipped_documents": count["skipped_documents"],
        "chunks": count["chunks"],
        "terms": terms.count_terms(store.conn),
        "postings": terms.count_postings(store.conn),
        "roots": count["roots"],
        "bytes": {"database": _size(store, DB_FILE) + _size(store, DB_FILE + "-wal"),
                  "bm25_cache": _size(store, CACHE_FILE)},
        "fingerprint": store.fingerprint(),
        "vectors": _vectors(store),
        "last_run": _last_run(store),
    }


def _vectors(store: Store) -> dict | None:
    from kb.index import vectors
    from kb.index.search import fusion

    raw = store.meta("embedding")
    if raw is None and store.vector_setting() == "none":
        return None
    texts, embedded = embeddings.text_counts(store.conn)
    progress = {"embedded_texts": embedded, "chunk_texts": texts}
    if raw is None:  # a first run that ended before its embedding did (or is embedding now)
        return {"kind": None, "count": 0, "up_to_date": False, "complete": False, **progress}
    meta = json.loads(raw)
    tag = vectors.peek(store) or {}
    current = tag.get("version") == store.data_version and tag.get("key") == meta["key"]
    return {"kind": tag.get("kind"), "count": tag.get("count", 0), "up_to_date": current,
            "complete": embedded == texts, **progress,
            "model": meta["fingerprint"]["model"], "dims": meta["fingerprint"]["dims"],
            "fingerprint": meta["fingerprint"], "fusion": fusion.settings(store),
            "bytes": _size(store, vectors.FILE)}


def _size(store: Store, name: str) -> int:
    try:
        return os.path.getsize(store.path(name))
    except OSError:
        return 0


def _last_run(store: Store) -> dict | None:
    row = runs.last(store.conn)
    if row is None:
        return None
    _, started, finished, state, stats = row
    if state == "running" and not _lock_held(store):
        state = "interrupted"  # killed: the next `kb index` completes what it left
    return {"started": _iso(started), "finished": _iso(finished), "status": state,
            "stats": json.loads(stats) if stats else None}


def _iso(t: float | None) -> str | None:
    """A run's time in ISO 8601, local time with its offset (2026-12-02T07:41:03+01:00)."""
    from datetime import datetime

    return None if t is None else datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def _lock_held(store: Store) -> bool:
    try:
        fd = os.open(store.path("index.lock"), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
