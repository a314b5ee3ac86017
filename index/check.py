"""`kb check`: is a store sound, and do its derived files agree with it?

The idea is Lucene's CheckIndex: read everything once, report each problem with whether it can
be fixed, and fix only on request. SQLite is the source of truth, so what `--repair` can fix is
what is derived from it (the BM25 cache, the vector index, `kb ask`'s KV cache) and rows that
point nowhere; a database that fails SQLite's own integrity check cannot be repaired here.
Checking opens the database read-only, so it works on a store this process cannot write.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kb.common import BROKEN_FILE, is_damage
from kb.errors import NotFound, StoreIncompatible, UsageError
from kb.index.bm25 import CACHE_FILE, Bm25Cache, title_weight
from kb.index.store import DB_FILE, Store, connect_readonly, default_db_dir, health, kv, migrations, terms
from kb.index.store.migrations import SCHEMA_VERSION

HEADER = b"SQLite format 3\x00"
UNREPAIRABLE = "move the store's folder aside and run `kb index` again, or restore a backup"


class StoreDamaged(StoreIncompatible):
    """`kb check` found problems in a store (exit 4, like any store kb cannot use as it is)."""


@dataclass(frozen=True)
class Problem:
    what: str  # integrity | database | schema | orphans | postings | bm25 | vectors | kv
    detail: str
    repairable: bool


def check(directory: Path | str | None = None, repair: bool = False) -> dict:
    """{"db", "ok", "problems": [{"what", "detail", "repairable"}], "repaired": [str]}. With
    `repair`, `problems` is what is still wrong after repairing (ok iff it is empty)."""
    d = Path(directory).expanduser() if directory else default_db_dir()
    if not (d / DB_FILE).is_file():
        raise NotFound(f"no knowledge base at {d} (run `kb index PATH --db {d}` first)")
    found, repaired = inspect(d), []
    if repair and found and not _fatal(found):
        repaired = _repair(d, found)
        found = inspect(d)
    return {"db": str(d.resolve()), "ok": not found, "problems": [asdict(p) for p in found],
            "repaired": repaired}


def summary(report: dict) -> str:
    """One line for a report that is not ok: the first problem and what to do."""
    problems = [Problem(**p) for p in report["problems"]]
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    if _fatal(problems):
        hint = f"it cannot be repaired: {UNREPAIRABLE}"
    elif all(p.repairable for p in problems):
        hint = "`kb check --repair` fixes it" if not report["repaired"] else "repairing did not fix it"
    else:
        hint = "run `kb index PATH --rebuild`"
    return f"store {report['db']}: {first.what}: {first.detail}{more}; {hint}"


def inspect(d: Path) -> list[Problem]:
    """Every problem of the store in `d`, read-only."""
    db = d / DB_FILE
    problem = _file_problem(db)
    if problem:
        return [problem]
    try:
        conn = connect_readonly(db)
    except sqlite3.DatabaseError as e:
        if not is_damage(e):
            raise UsageError(f"cannot open {db}: {_line(e)}") from e
        return [Problem("integrity", _line(e), False)]
    try:
        health.begin_snapshot(conn)
        return _integrity(conn) or _contents(Store(d.resolve(), conn))
    except sqlite3.DatabaseError as e:
        if not is_damage(e):
            raise
        return [Problem("integrity", _line(e), False)]
    finally:
        conn.close()


def _fatal(problems: list[Problem]) -> bool:
    return any(p.what in ("integrity", "database") for p in problems)


def _file_problem(db: Path) -> Problem | None:
    """Looked at before SQLite opens the file: SQLite takes a 0-byte file for a new database."""
    try:
        with open(db, "rb") as f:
            head = f.read(len(HEADER))
    except OSError as e:
        raise UsageError(f"cannot read {db}: {e.strerror or e}") from e
    if not head:
        return Problem("database", f"{DB_FILE} is empty (0 bytes): its contents are lost", False)
    if head != HEADER:
        return Problem("database", f"{DB_FILE} is not an SQLite database (its header is wrong)", False)
    return None


def _integrity(conn: sqlite3.Connection) -> list[Problem]:
    rows = health.integrity(conn, 20)
    if rows != ["ok"]:
        more = f" (and {len(rows) - 3} more)" if len(rows) > 3 else ""
        return [Problem("integrity", _line("; ".join(rows[:3])) + more, False)]
    return []


def _contents(store: Store) -> list[Problem]:
    """The rows and the derived files of a database that passed the integrity check."""
    conn = store.conn
    version = migrations.version(conn)
    if version > SCHEMA_VERSION:
        raise StoreIncompatible(f"store {store.dir} has schema {version}, newer than this kb "
                                f"understands ({SCHEMA_VERSION}); upgrade kb")
    if version < SCHEMA_VERSION:  # the tables checked below may not exist yet
        return [Problem("schema", f"schema {version}, older than this kb's {SCHEMA_VERSION} "
                                  "(migrated on the next write)", True)]
    embedding = store.meta_json("embedding")
    found = _orphans(conn, embedding["key"] if embedding else None)
    bad = terms.torn_blobs(conn)
    if bad:  # the postings cannot be read: neither can the BM25 cache be compared
        return found + [Problem("postings", f"{bad} chunk_terms blob(s) are not (term, tf) pairs; "
                                            "run `kb index PATH --rebuild`", False)]
    chunk_ids, _, pairs = terms.read_postings(conn)
    found += _unknown_terms(conn, pairs)
    return found + _bm25(store, chunk_ids, len(pairs)) + _vectors(store, embedding) + _kv(store.path(kv.KV_DIR))


def _orphans(conn: sqlite3.Connection, key: str | None) -> list[Problem]:
    """Rows whose parent is gone: SQLite's foreign key check (chunks, chunk_terms), and vectors of
    the store's encoder that no chunk's text uses."""
    found = [Problem("orphans", f"{n} {table} row(s) point to no {parent} row", table in health.ORPHANS)
             for (table, parent), n in sorted(health.foreign_key_orphans(conn).items())]
    if key is not None:
        n = health.orphan_vectors(conn, key)
        if n:
            found.append(Problem("orphans", f"{n} embeddings row(s) belong to no chunk's text", True))
    return found


def _unknown_terms(conn: sqlite3.Connection, pairs: np.ndarray) -> list[Problem]:
    """Postings naming a term id the terms table lacks (they would break the BM25 cache's build).
    Terms no posting uses are no problem: `kb index` keeps every term id once handed out."""
    unknown = np.setdiff1d(np.unique(pairs[:, 0]), terms.all_term_ids(conn))
    if len(unknown):
        return [Problem("postings", f"postings name {len(unknown)} term id(s) the terms table lacks; "
                                    "run `kb index PATH --rebuild`", False)]
    return []


def _bm25(store: Store, chunk_ids: np.ndarray, nnz: int) -> list[Problem]:
    arrays = _read_npz(store.path(CACHE_FILE))
    if isinstance(arrays, str):
        return [Problem("bm25", f"{CACHE_FILE} is {arrays}", True)]
    want = Bm25Cache.tag(store.data_version, title_weight(store))
    stale = _differences(arrays, want)
    if stale:
        return [Problem("bm25", f"{CACHE_FILE} is stale ({stale})", True)]
    if not np.array_equal(arrays.get("chunk_ids"), chunk_ids) or len(arrays.get("rows", ())) != nnz:
        return [Problem("bm25", f"{CACHE_FILE} disagrees with the database's postings", True)]
    return []


def _vectors(store: Store, embedding: dict | None) -> list[Problem]:
    from kb.index import vectors
    from kb.index.store import embeddings

    path = store.path(vectors.FILE)
    if embedding is None:
        return [Problem("vectors", f"{vectors.FILE} is left over: the store has no embeddings", True)] \
            if path.exists() else []
    arrays = _read_npz(path)
    if isinstance(arrays, str):
        return [Problem("vectors", f"{vectors.FILE} is {arrays}", True)]
    want = {"key": embedding["key"], "dims": embedding["fingerprint"]["dims"], "version": store.data_version}
    stale = _differences(arrays, want)
    if stale:
        return [Problem("vectors", f"{vectors.FILE} is stale ({stale})", True)]
    ids, _ = embeddings.listing(store.conn, embedding["key"])
    have = arrays.get("ids")
    if have is None or not np.array_equal(np.sort(have), ids):
        return [Problem("vectors", f"{vectors.FILE} holds other chunks than the database has vectors for "
                                   f"({0 if have is None else len(have)} vs {len(ids)})", True)]
    return []


def _kv(root: Path) -> list[Problem]:
    """`kb ask`'s KV blocks can be pruned only while their sources.db is readable."""
    db = root / kv.SOURCES_DB
    if not db.is_file():
        blocks = root.is_dir() and any(root.glob("*/*/*.npz"))
        return [Problem("kv", f"{kv.KV_DIR}/ holds KV blocks but no sources.db", True)] if blocks else []
    try:
        conn = connect_readonly(db)
        try:
            verdict = kv.check(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        return [Problem("kv", f"{kv.KV_DIR}/sources.db is unreadable ({_line(e)})", True)]
    return [] if verdict == "ok" else [Problem("kv", f"{kv.KV_DIR}/sources.db is damaged ({_line(verdict)})", True)]


def _read_npz(path: Path) -> dict | str:
    """Every member of a derived .npz file (reading one checks its CRC), or why it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except FileNotFoundError:
        return "missing"
    except BROKEN_FILE as e:
        return f"unreadable ({_line(e)})"


def _differences(arrays: dict, want: dict) -> str:
    """How a derived file's tag differs from what the store expects ('' if it does not)."""
    try:
        tag = json.loads(str(arrays["tag"]))
    except (KeyError, ValueError):
        return "no readable tag"
    if not isinstance(tag, dict):
        return "no readable tag"
    return ", ".join(f"{k} {tag.get(k)!r}, the store's {v!r}" for k, v in want.items() if tag.get(k) != v)


def _repair(d: Path, found: list[Problem]) -> list[str]:
    """Fix what `found` says is repairable; returns what was done. Holds `kb index`'s lock."""
    from kb.index.lock import IndexLock

    store = Store.open(d)  # read-write; migrates an older schema
    try:
        with IndexLock(store.dir, 30):
            done = [f"schema: migrated to {SCHEMA_VERSION}"] if any(p.what == "schema" for p in found) else []
            removed = _delete_orphans(store)
            done += removed
            what = {p.what for p in found}
            if removed or "bm25" in what:
                Bm25Cache.build(store).save(store)
                done.append(f"bm25: rebuilt {CACHE_FILE}")
            if removed or "vectors" in what:
                done += _rebuild_vectors(store)
            if "kv" in what:
                done.append(f"kv: dropped the KV cache ({kv.drop_all(store.path(kv.KV_DIR))} block file(s))")
            return done
    finally:
        store.close()


def _delete_orphans(store: Store) -> list[str]:
    embedding = store.meta_json("embedding")
    with store.transaction() as conn:  # one transaction: all orphans go, or none
        deleted = health.delete_orphans(conn, embedding["key"] if embedding else None)
    return [f"orphans: deleted {n} {table} row(s)" for table, n in deleted.items() if n]


def _rebuild_vectors(store: Store) -> list[str]:
    from kb.index import vectors

    path = store.path(vectors.FILE)
    meta = store.meta_json("embedding")
    if meta is None:
        path.unlink(missing_ok=True)
        return [f"vectors: removed {vectors.FILE}"]
    old = vectors.peek(store) or {}
    kind = old.get("kind") if old.get("kind") in vectors.KINDS else "auto"
    path.unlink(missing_ok=True)  # built from the database alone, nothing caught up from the file
    tag, _ = vectors.current(store, meta["key"], meta["fingerprint"]["dims"], kind)
    return [f"vectors: rebuilt {vectors.FILE} ({tag.kind}, {tag.dims} dims)"]


def _line(e: object) -> str:
    return " ".join(str(e).split())
