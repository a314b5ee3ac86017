"""`kb index`: bring the store up to date with some files and folders.

Crash safety: each batch of files is one SQLite transaction, so a run killed at any point leaves
the store as it was after its last committed batch; the next run redoes the rest. Files vanished
from a folder are removed in a final transaction. Derived files are rebuilt last, tagged with the
data version they reflect.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from kb.embed.encoder import EmbedConfig
from kb.embed.tokenizer import Tokenizer, load_tokenizer
from kb.errors import NotFound, StoreIncompatible, UsageError
from kb.index.analyzer import ANALYZER_VERSION
from kb.index.bm25 import Bm25Cache, TermIds
from kb.index.chunker import ChunkConfig
from kb.index.documents import (DocRow, NewDoc, clear_all, delete_documents, docs_under,
                                touch_document, write_document)
from kb.index.gpu_feed import GpuFeed
from kb.index.lock import IndexLock
from kb.index.migrations import SCHEMA_VERSION
from kb.index.reading import Reader, ReadConfig, ReadJob
from kb.index.store import DB_FILE, Store, damage
from kb.index.vectors import KINDS
from kb.index.walker import Found, WalkReport, walk
from kb.names import path_text


KNOWN_BYTES = 512 << 20  # vectors a run keeps in memory for building the vector index


@dataclass(frozen=True)
class IndexConfig:
    chunk: ChunkConfig = ChunkConfig()
    max_file_mb: float = 20.0  # larger files are skipped with a warning
    follow_symlinks: bool = False  # follow symlinks that leave the indexed folder
    wait: float = 30.0  # seconds to wait for another `kb index` on the same store
    rebuild: bool = False  # drop everything and index the given paths afresh
    batch_files: int = 64  # files per transaction
    embed: EmbedConfig = EmbedConfig()  # its model's tokenizer also measures the chunks
    # auto | flat | hnsw | ivf | none (BM25 only, nothing embedded); None: what the store was
    # indexed with last (a store remembers it: a change is explicit), else auto
    vector_index: str | None = None
    embed_batch: int = 256  # chunks embedded per transaction
    workers: int = 0  # processes that read and chunk files; 0: one per CPU core

    def __post_init__(self):
        if self.max_file_mb <= 0 or self.wait < 0 or self.batch_files < 1:
            raise UsageError("--max-file-mb must be > 0 and --wait >= 0")
        if self.vector_index not in (None, "none", *KINDS):
            raise UsageError(f"--vector-index must be one of {', '.join(KINDS)}, none")


@dataclass
class IndexReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0
    seconds: float = 0.0
    embedded: int = 0  # chunk texts embedded by this run (unchanged texts keep their vectors)
    vector_index: str | None = None  # the kind in use after the run
    skipped: int = 0  # files recorded without chunks: binary, too large, empty, unreadable PDF
    errors: list[str] = field(default_factory=list)  # files that could not be read; old entries kept
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


class Progress(Protocol):
    def start(self, total: int, label: str = "indexing") -> None: ...
    def advance(self, path: Path, tokens: int = 0) -> None: ...  # a file read (its chunks' tokens), or a chunk embedded
    def finish(self) -> None: ...


class _NoProgress:
    def start(self, total, label="indexing"): pass
    def advance(self, path, tokens=0): pass
    def finish(self): pass


@dataclass(frozen=True)
class _Target:
    root: Path  # resolved folder; result paths are relative to it
    file: Path | None  # a single file given on the command line, else the whole folder


def resolve_targets(paths: list[str | Path]) -> list[_Target]:
    if not paths:
        raise UsageError("no path given: kb index PATH...")
    targets = []
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise NotFound(f"no such file or folder: {raw}")
        real = p.resolve()
        if not (real.is_dir() or real.is_file()):
            raise UsageError(f"not a regular file or folder: {raw}")
        targets.append(_Target(real, None) if real.is_dir() else _Target(real.parent, real))
    return targets


def fingerprint(tokenizer: Tokenizer, chunk: ChunkConfig) -> dict:
    return {"schema": SCHEMA_VERSION, **tokenizer.fingerprint(), "chunking": chunk.fingerprint(),
            "analyzer": ANALYZER_VERSION}


def index_paths(paths: list[str | Path], db: str | Path | None = None,
                cfg: IndexConfig = IndexConfig(), progress: Progress | None = None) -> IndexReport:
    targets = resolve_targets(paths)  # before the store is touched: bad input changes nothing
    load_tokenizer(cfg.embed.model)  # a folder that is no model: an error before any store is made
    if cfg.embed.devices and cfg.vector_index != "none":
        from kb.embed.multi import check_devices

        check_devices(cfg.embed.devices)
    store = Store.open(db, create=True)
    try:
        with IndexLock(store.dir, cfg.wait):
            store.probe_write()
            cfg = replace(cfg, vector_index=cfg.vector_index or store.vector_setting())
            return _Run(store, cfg, progress or _NoProgress()).run(targets)
    finally:
        store.close()


class _Run:
    def __init__(self, store: Store, cfg: IndexConfig, progress: Progress):
        self.store, self.cfg, self.progress = store, cfg, progress
        self.tokenizer = load_tokenizer(cfg.embed.model)
        self.terms = TermIds(store.conn)
        self.report = IndexReport()
        self.feed = GpuFeed(cfg.embed) if cfg.vector_index != "none" else None
        self._new_rows: list = []
        self._embed_key: str | None = None
        # vectors this run wrote, by text hash, so that the vector index is built without reading
        # them back from SQLite (up to KNOWN_BYTES; the rest is read)
        self._known: dict[str, np.ndarray] = {}
        self._known_bytes = 0
        self.reader = Reader(ReadConfig(cfg.max_file_mb, cfg.chunk, cfg.embed.model), cfg.workers)
        self._reads = iter(())

    def run(self, targets: list[_Target]) -> IndexReport:
        started = time.time()
        # Checkpoints (copying the WAL back into the database file) wait until the run is over:
        # done every 1000 pages, they were a third of the time spent writing chunks. The WAL is
        # capped at about 400 MB; a killed run's WAL is checkpointed by the next writer.
        self.store.conn.execute("PRAGMA wal_autocheckpoint=100000")
        self._check_after_bad_end()
        with self.store.transaction(data=False) as conn:
            run_id = conn.execute("INSERT INTO runs(started, status) VALUES (?, 'running')",
                                  (started,)).lastrowid
        # A rebuild is one transaction: queries see the old index until the new one is whole,
        # and a rebuild that is killed leaves the old index as it was
        with self.store.held() if self.cfg.rebuild else nullcontext():
            self._check_fingerprint()
            self._read_and_write(targets)
            if self.cfg.rebuild:
                self._take_vectors()
                if self.cfg.vector_index != "none":
                    self._embed()
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2, thread_name_prefix="kb-derive") as pool:
            # The BM25 cache needs only the postings, final now: it is built while the GPU embeds
            # what it has left
            bm25 = pool.submit(self._bm25)
            self._take_vectors()
            if self.cfg.vector_index != "none":
                self._embed()
            self._derive(pool, bm25)
        self._prune_kv()
        self.report.seconds = round(time.time() - started, 3)
        self.store.conn.execute("PRAGMA wal_autocheckpoint=1000")  # the commit below checkpoints
        with self.store.transaction(data=False) as conn:
            conn.execute("UPDATE runs SET finished=?, status=?, stats=? WHERE id=?",
                         (time.time(), "partial" if self.report.errors else "ok",
                          json.dumps(self.report.to_json()), run_id))
        return self.report

    def _check_after_bad_end(self) -> None:
        """SQLite's quick check, once after a run that did not end well (killed, failed: the
        machine may have crashed with it): a damaged store stops here, before more is written."""
        row = self.store.conn.execute("SELECT id, status FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        if row is None or row[1] != "running" or self.store.meta("checked_after_run") == str(row[0]):
            return
        problem = damage(self.store.dir)
        if problem:
            raise StoreIncompatible(f"the store is damaged ({problem}); `kb check` says more; move its folder "
                                    "aside and run `kb index` again, or restore a backup")
        with self.store.transaction(data=False):
            self.store.set_meta("checked_after_run", str(row[0]))

    def _read_and_write(self, targets: list[_Target]) -> None:
        walked = WalkReport()
        work = [(t, self._files(t, walked)) for t in targets]
        self.report.warnings += [path_text(w) for w in walked.warnings]
        self.progress.start(sum(len(files) for _, files in work))
        try:
            for target, files in work:
                self._index_target(target, files, walked)
        finally:
            self.reader.close()
            self.progress.finish()

    def _prune_kv(self) -> None:
        """Drop `kb ask`'s cached KV blocks computed from chunks this run removed."""
        from kb.rag.kv_sources import prune_sources

        def live(ids: list[int]) -> list[int]:
            out = []
            for i in range(0, len(ids), 500):
                part = ids[i:i + 500]
                out += [r[0] for r in self.store.conn.execute(
                    f"SELECT id FROM chunks WHERE id IN ({','.join('?' * len(part))})", part)]
            return out
        prune_sources(self.store.path("kv"), live)

    def _bm25(self) -> Bm25Cache:
        store = Store.open(self.store.dir)  # a connection of its own: this runs in a thread
        try:
            return Bm25Cache.current(store)
        finally:
            store.close()

    def _retag_bm25(self, cache: Bm25Cache) -> None:
        """The BM25 cache was built once reading was over; the vectors written since then moved
        the data version but changed no posting: the same cache, tagged with today's version."""
        version = self.store.data_version
        if cache.version != version:
            cache.version = version
            try:
                cache.save(self.store)
            except OSError:
                pass  # the next query rebuilds it

    def _derive(self, pool, bm25) -> None:
        """Bring the derived files up to date with the store, now that its data is final: the
        vector index here, the BM25 cache (`bm25`, started in `pool` once reading was over), and
        meanwhile the WAL copied back into the database (the run deferred that; see run()). Each
        is rebuilt only if this run changed something; their reads, numpy work and writes overlap."""

        def checkpoint() -> None:
            conn = sqlite3.connect(self.store.path(DB_FILE), isolation_level=None, timeout=30)
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                conn.close()

        jobs = [bm25, pool.submit(checkpoint)]
        if self.cfg.vector_index != "none":
            from kb.embed.encoder import describe
            from kb.index import vectors

            spec = describe(self.cfg.embed)
            tag, _ = vectors.current(self.store, spec.key, spec.dims, self.cfg.vector_index, known=self._known)
            self.report.vector_index = tag.kind
        for job in jobs:
            job.result()
        self._retag_bm25(bm25.result())

    def _embed(self) -> None:
        """Embed chunk texts that have no vector yet (batch by batch, so a killed run resumes) and
        drop vectors nothing uses."""
        from kb.embed.encoder import describe, load_encoder
        from kb.index import embeddings

        spec = describe(self.cfg.embed)
        todo = embeddings.missing(self.store.conn, spec.key)
        encoder = load_encoder(self.cfg.embed) if todo else None  # loading torch costs seconds
        self.progress.start(len(todo), "embedding")
        try:
            for i in range(0, len(todo), self.cfg.embed_batch):
                part = todo[i:i + self.cfg.embed_batch]
                vecs = encoder.embed_passages([np.frombuffer(blob, np.int32) for _, blob in part])
                with self.store.transaction() as conn:
                    embeddings.write(conn, spec.key, [h for h, _ in part], vecs)
                self._remember([h for h, _ in part], vecs)
                for _, blob in part:
                    self.progress.advance(Path("embedding"), len(blob) // 4)
                self.report.embedded += len(part)
        finally:
            self.progress.finish()
        with self.store.transaction() as conn:
            embeddings.collect_garbage(conn, spec.key)
        meta = json.dumps({"key": spec.key, "fingerprint": spec.fingerprint,
                           "config": {k: v for k, v in asdict(self.cfg.embed).items()
                                      if k not in ("device", "devices")}})
        if self.store.meta("embedding") != meta:
            with self.store.transaction(data=False):
                self.store.set_meta("embedding", meta)

    def _check_fingerprint(self) -> None:
        wanted = fingerprint(self.tokenizer, self.cfg.chunk)
        have = self.store.fingerprint()
        has_docs = self.store.conn.execute("SELECT 1 FROM documents LIMIT 1").fetchone()
        if have is not None and have != wanted and has_docs and not self.cfg.rebuild:
            changed = sorted(k for k in wanted if have.get(k) != wanted[k])
            raise StoreIncompatible(
                f"store {self.store.dir} was built with other settings ({', '.join(changed)}); "
                "run `kb index --rebuild PATH...` to index afresh")
        if self.cfg.rebuild:
            with self.store.transaction() as conn:
                clear_all(conn)
        if have != wanted:
            with self.store.transaction(data=False):
                self.store.set_meta("fingerprint", json.dumps(wanted, sort_keys=True))
        if self.store.meta("vector_index") != self.cfg.vector_index:
            with self.store.transaction(data=False):
                self.store.set_meta("vector_index", self.cfg.vector_index)

    def _files(self, target: _Target, walked: WalkReport) -> list[Found]:
        if target.file is not None:
            from kb.index.readers import kind_of

            # A file named on the command line is read even with an unknown extension: as text.
            return [Found(target.file, kind_of(target.file) or "text", target.file.stat())]
        files, names = [], set()
        for f in walk(target.root, walked, self.cfg.follow_symlinks):
            name = path_text(f.path)
            if name in names:  # `a\xff` spelt out, beside a name holding the byte itself
                walked.warnings.append(f"{f.path}: skipped, its name reads like another file's ({name})")
                continue
            names.add(name)
            files.append(f)
        return files

    def _index_target(self, target: _Target, files: list[Found], walked: WalkReport) -> None:
        scope = path_text(target.file or target.root)
        existing = docs_under(self.store.conn, scope)
        root = str(target.root)
        self._reads = self.reader.results(
            ReadJob(str(f.path), root, f.kind, f.stat.st_size, f.stat.st_mtime_ns) for f in files
            if not _unchanged(existing.get(path_text(f.path)), f))
        # The first transactions are small, so that the GPU feed (and anyone reading the store)
        # gets the first chunks early; then batch_files per transaction.
        i, size = 0, min(8, self.cfg.batch_files)
        while i < len(files):
            self._batch(target, files[i:i + size], existing)
            i, size = i + size, min(2 * size, self.cfg.batch_files)
        seen = {path_text(f.path) for f in files}
        keep = [path_text(d) + "/" for d in walked.unreadable_dirs]
        vanished = [d.id for p, d in existing.items()
                    if p not in seen and not any(p.startswith(k) for k in keep)]
        if vanished:
            with self.store.transaction() as conn:
                self.report.chunks_removed += delete_documents(conn, vanished)
            self.report.removed += len(vanished)

    def _batch(self, target: _Target, files: list[Found], existing: dict[str, DocRow]) -> None:
        self._new_rows = []
        try:
            with self.store.transaction() as conn:
                for f in files:
                    self.progress.advance(f.path, self._file(conn, target, f, existing.get(path_text(f.path))))
                self._write_vectors(conn, self.feed.ready() if self.feed else [])
        except BaseException:
            self.terms.reset()  # ids handed out in the rolled-back transaction are void
            raise
        if self.feed is not None:
            self.feed.put(self._new_rows)  # committed: the GPU may embed them now

    def _take_vectors(self) -> None:
        """The GPU feed's last vectors, once reading is over (kb.index.gpu_feed)."""
        if self.feed is None:
            return
        done = self.feed.finish()
        if done:
            with self.store.transaction() as conn:
                self._write_vectors(conn, done)

    def _write_vectors(self, conn, done: list) -> None:
        from kb.embed.encoder import describe
        from kb.index import embeddings

        for hashes, vectors in done:
            self._embed_key = self._embed_key or describe(self.cfg.embed).key
            embeddings.write(conn, self._embed_key, hashes, vectors)
            self._remember(hashes, vectors)
            self.report.embedded += len(hashes)

    def _remember(self, hashes: list[str], vectors: np.ndarray) -> None:
        """Keep vectors just written (their transaction commits, or the run fails) for _derive."""
        if self._known_bytes + vectors.nbytes > KNOWN_BYTES:
            return
        self._known_bytes += vectors.nbytes
        self._known.update(zip(hashes, vectors.astype(np.float32, copy=False)))

    def _file(self, conn, target: _Target, f: Found, old: DocRow | None) -> int:
        """Bring one file's entry up to date; the tokens of its chunks if it was read (for the
        progress display's rate), else 0."""
        root, st = path_text(target.root), f.stat
        if _unchanged(old, f):
            if old.root != root:
                touch_document(conn, old.id, root, st.st_size, st.st_mtime_ns)
            self.report.unchanged += 1
            return 0
        doc = self._read(f)
        if doc is None:
            return 0
        tokens = sum(len(c.token_ids) for c in doc.chunks)
        if old and old.hash == doc.hash:
            touch_document(conn, old.id, root, st.st_size, st.st_mtime_ns)
            self.report.unchanged += 1
            return tokens
        added, removed = write_document(conn, self.terms, doc, old.id if old else None,
                                        self._new_rows if self.feed is not None and self.feed.active else None)
        self.report.chunks_added += added
        self.report.chunks_removed += removed
        if old:
            self.report.updated += 1
        else:
            self.report.added += 1
        return tokens

    def _read(self, f: Found) -> NewDoc | None:
        """The document as it now is (read ahead by the reader), or None if it cannot be read
        (its old entry is kept)."""
        r = next(self._reads)
        assert r.doc is None or r.doc.path == str(f.path), "reads out of order"
        self.report.warnings += [path_text(w) for w in r.warnings]
        if r.error:
            self.report.errors.append(path_text(r.error))
        self.report.skipped += r.skipped
        doc = r.doc
        if doc is not None and (path_text(doc.path), path_text(doc.root)) != (doc.path, doc.root):
            # a name that is not valid UTF-8 is stored as text (kb.names); it was read by its real name
            doc = replace(doc, path=path_text(doc.path), root=path_text(doc.root))
        return doc


def _unchanged(old: DocRow | None, f: Found) -> bool:
    """Same size and modification time as when it was indexed: not read again."""
    return old is not None and old.size == f.stat.st_size and old.mtime_ns == f.stat.st_mtime_ns
