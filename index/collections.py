"""Collections: the folders a store keeps, by name, each with its own include/exclude rules and
an optional one-line context that `kb ask` shows the model beside its passages. `kb index PATH`
adds a folder as one (named after it unless `--name` says otherwise); `kb index` with no path
refreshes them all; `remove` drops one with everything derived from it.

They live in the store's meta table (key "collections", JSON): a few rows that change with an
index run, in the same transactions, so no schema change (and no rebuild) is needed. Files
named on the command line are indexed but are no collection."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from kb.errors import NotFound, UsageError
from kb.index.store import Store

KEY = "collections"


@dataclass(frozen=True)
class Collection:
    name: str
    root: str  # the resolved folder
    include: tuple[str, ...] = ()  # gitignore-style patterns a file must match one of (none: all)
    exclude: tuple[str, ...] = ()  # gitignore-style patterns, on top of .gitignore and .kbignore
    context: str = ""  # what the folder is, for the model: "Team runbooks, 2024 onwards"

    def to_json(self) -> dict:
        return {**asdict(self), "include": list(self.include), "exclude": list(self.exclude)}


@dataclass(frozen=True)
class Settings:
    """What `kb index PATH` says about the collection of PATH; None: keep what it has."""
    name: str | None = None
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None
    context: str | None = None


def load(store: Store) -> dict[str, Collection]:
    raw = json.loads(store.meta(KEY) or "[]")
    return {c["name"]: Collection(c["name"], c["root"], tuple(c.get("include", ())), tuple(c.get("exclude", ())),
                                  c.get("context", "")) for c in raw}


def save(store: Store, cols: dict[str, Collection]) -> None:
    """Within a transaction of the caller's."""
    store.set_meta(KEY, json.dumps([c.to_json() for c in sorted(cols.values(), key=lambda c: c.name)]))


def check_name(name: str) -> str:
    if not name or len(name) > 100 or any(c in name for c in "/\\\n\r\t") or name.startswith("-"):
        raise UsageError(f"a collection name is 1 to 100 characters without / \\ or line breaks: {name!r}")
    return name


def upsert(cols: dict[str, Collection], root: Path, s: Settings) -> Collection:
    """The collection of folder `root` after this run's settings (added if new): `cols` updated."""
    root_text = str(root)
    old = next((c for c in cols.values() if c.root == root_text), None)
    name = check_name(s.name) if s.name else (old.name if old else _free_name(cols, root.name or "root"))
    if name in cols and cols[name].root != root_text:
        raise UsageError(f"collection {name!r} is {cols[name].root}; choose another --name")
    keep = old or Collection(name, root_text)
    new = Collection(name, root_text, keep.include if s.include is None else s.include,
                     keep.exclude if s.exclude is None else s.exclude,
                     " ".join((keep.context if s.context is None else s.context).split())[:300])
    if old is not None and old.name != name:
        del cols[old.name]
    cols[name] = new
    return new


def _free_name(cols: dict[str, Collection], base: str) -> str:
    name, n = base, 2
    while name in cols:
        name, n = f"{base}-{n}", n + 1
    return name


def document_ids(conn, col: Collection) -> list[int]:
    """Ids of the documents indexed under the collection's folder as their root (a nested
    collection's documents lie under it too, but with their own root)."""
    from kb.index.store import documents

    return [d.id for d in documents.docs_under(conn, col.root).values() if d.root == col.root]


def targets_of(store: Store, warnings: list[str]) -> list[tuple[Collection, Path]]:
    """Every collection whose folder is there, for `kb index` without paths; a folder that is gone
    is a warning (its documents stay searchable until the collection is removed)."""
    cols = load(store)
    if not cols:
        raise UsageError("this store has no collections yet: `kb index FOLDER` adds one")
    out = []
    for c in cols.values():
        if os.path.isdir(c.root):
            out.append((c, Path(c.root)))
        else:
            warnings.append(f"collection {c.name}: its folder {c.root} is gone; its documents are kept "
                            f"until `kb collections remove {c.name}`")
    return out


def pick(store: Store, names: list[str]) -> list[Collection]:
    """The named collections (NotFound for one the store does not have)."""
    cols = load(store)
    missing = [n for n in names if n not in cols]
    if missing:
        known = ", ".join(sorted(cols)) or "none yet"
        raise NotFound(f"no collection {missing[0]!r} in this store (collections: {known})")
    return [cols[n] for n in names]


def find(store: Store, name_or_path: str) -> Collection:
    """A collection by name, or by its folder (as given, resolved)."""
    cols = load(store)
    if name_or_path in cols:
        return cols[name_or_path]
    real = os.path.realpath(os.path.expanduser(name_or_path))
    for c in cols.values():
        if c.root == real:
            return c
    known = ", ".join(sorted(cols)) or "none yet"
    raise NotFound(f"no collection named or at {name_or_path!r} (collections: {known})")


def remove(db: str | Path | None, name_or_path: str, wait: float) -> dict:
    """Drop a collection (by name or folder) with its documents, chunks, postings and vectors in
    one transaction, then the files derived from them and its KV blocks; under the index lock.
    A kill after the commit leaves derived files tagged with an older data version: the next
    query or `kb index` rebuilds them, and the next `kb index` prunes the KV blocks."""
    from kb.index.lock import IndexLock
    from kb.index.store import documents, embeddings

    store = Store.open(db)
    try:
        with IndexLock(store.dir, wait):
            col = find(store, name_or_path)
            with store.transaction() as conn:
                doc_ids = document_ids(conn, col)
                chunks = documents.delete_documents(conn, doc_ids)
                meta = store.meta_json("embedding")
                vectors = embeddings.collect_garbage(conn, meta["key"]) if meta else 0
                cols = load(store)
                del cols[col.name]
                save(store, cols)
            blocks = _derive(store)
            return {"removed": col.name, "root": col.root, "documents": len(doc_ids), "chunks": chunks,
                    "vectors": vectors, "kv_blocks": blocks}
    finally:
        store.close()


def _derive(store: Store) -> int:
    """The BM25 cache and vector index rebuilt without the removed chunks; the KV blocks pruned."""
    from concurrent.futures import ThreadPoolExecutor

    from kb.embed.encoder import EmbedConfig
    from kb.index.phases import derive

    meta = store.meta_json("embedding")
    vectors = (EmbedConfig(**meta["config"]), store.vector_setting(), {}) if meta else None
    heard = []
    with ThreadPoolExecutor(2, thread_name_prefix="kb-derive") as pool:
        derive.derive(store, pool, derive.start_bm25(pool, store), vectors, heard.append)
    return sum(e.counts.get("kv_blocks_pruned", 0) for e in heard)
