"""`kb index`: bring the store up to date with some files and folders.

A run is five phases (kb.index.phases): plan, read, write, embed, derive; this module holds the
run's configuration and report and sequences them. Crash safety: each batch of files is one SQLite
transaction, so a run killed at any point leaves the store as it was after its last committed
batch; the next run redoes the rest. Derived files are rebuilt last, tagged with the data version
they reflect.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

from kb.embed.encoder import EmbedConfig
from kb.embed.tokenizer import load_tokenizer
from kb.errors import UsageError
from kb.index.chunker import ChunkConfig
from kb.index.lock import IndexLock
from kb.index.phases import Events, PhaseEvent, derive, no_events, plan
from kb.index.phases.embed import Embed
from kb.index.phases.write import Write
from kb.index.readpool import Reader, ReadConfig
from kb.index import collections
from kb.index.store import Store, runs
from kb.index.vectors import KINDS
from kb.names import path_text


@dataclass(frozen=True)
class IndexConfig:
    chunk: ChunkConfig = ChunkConfig()
    max_file_mb: float = 20.0  # larger files are skipped with a warning
    follow_symlinks: bool = False  # follow symlinks that leave the indexed folder
    gitignore: bool = True  # leave out what .gitignore files exclude (.kbignore is always read)
    wait: float = 30.0  # seconds to wait for another `kb index` on the same store
    rebuild: bool = False  # drop everything and index the given paths afresh
    batch_files: int = 64  # files per transaction
    embed: EmbedConfig = EmbedConfig()  # its model's tokenizer also measures the chunks
    # auto | flat | hnsw | ivf | none (BM25 only, nothing embedded); None: what the store was
    # indexed with last (a store remembers it: a change is explicit), else auto
    vector_index: str | None = None
    embed_batch: int = 256  # chunks embedded per transaction
    workers: int = 0  # processes that read and chunk files; 0: one per CPU core
    # Readers run this much lower in priority than the process that writes what they read: with a
    # worker per core, that writer is the one serial step, and it should not wait for a core.
    worker_nice: int = 4
    known_bytes: int = 512 << 20  # vectors a run keeps in memory for building the vector index

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
    passed_over: dict[str, int] = field(default_factory=dict)  # not read, by reason (kb.index.walker)
    errors: list[str] = field(default_factory=list)  # files that could not be read; old entries kept
    warnings: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # seconds of each phase that ran (kb.index.phases)

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


def index_paths(paths: list[str | Path], db: str | Path | None = None, cfg: IndexConfig = IndexConfig(),
                progress: Progress | None = None, events: Events | None = None,
                settings: collections.Settings = collections.Settings(),
                declared: tuple[tuple[Path, collections.Settings], ...] = ()) -> IndexReport:
    """Index `paths` into the store at `db` (none: every collection it has, after adding the
    `declared` ones, the config file's), each folder as a collection described by `settings`;
    `events` hears each phase's PhaseEvent as it ends."""
    # before the store is touched: bad input changes nothing
    targets = plan.resolve_targets(paths) if paths else None
    if settings != collections.Settings() and (targets is None or len(targets) != 1 or targets[0].file):
        raise UsageError("--name, --include, --exclude and --context describe one folder: give exactly one")
    load_tokenizer(cfg.embed.model)  # a folder that is no model: an error before any store is made
    if cfg.embed.devices and cfg.vector_index != "none":
        from kb.embed.multi import check_devices

        check_devices(cfg.embed.devices)
    store = Store.open(db, create=targets is not None or bool(declared))
    try:
        with IndexLock(store.dir, cfg.wait):
            store.probe_write()
            cfg = replace(cfg, vector_index=cfg.vector_index or store.vector_setting())
            run = _Run(store, cfg, progress or _NoProgress(), events or no_events)
            if targets is None:
                _declare(store, declared, run.report.warnings)
            return run.run(_collected(store, targets, settings, run.report.warnings, cfg.rebuild))
    finally:
        store.close()


def _declare(store: Store, declared, warnings: list[str]) -> None:
    """The config file's collections added to (or updated in) the store, where their folders are."""
    cols = collections.load(store)
    for folder, settings in declared:
        if Path(folder).is_dir():
            collections.upsert(cols, Path(folder).resolve(), settings)
        else:
            warnings.append(f"collection {settings.name} of the config file: no folder {folder}")
    if declared:
        with store.transaction(data=False):
            collections.save(store, cols)


def _collected(store: Store, targets: list[plan.Target] | None, settings: collections.Settings,
               warnings: list[str], rebuild: bool) -> list[plan.Target]:
    """The run's targets with their collections' rules: each folder given becomes (or updates)
    a collection; without paths, every collection whose folder is there. A rebuild with paths
    keeps only their collections, as it keeps only their documents."""
    if targets is None:
        return [plan.Target(root, None, c.include, c.exclude) for c, root in collections.targets_of(store, warnings)]
    cols = collections.load(store)
    if rebuild:
        given = {str(t.root) for t in targets if t.file is None}
        cols = {n: c for n, c in cols.items() if c.root in given}
    out = []
    for t in targets:
        if t.file is None:
            c = collections.upsert(cols, t.root, settings)
            t = replace(t, include=c.include, exclude=c.exclude)
        out.append(t)
    with store.transaction(data=False):
        collections.save(store, cols)
    return out


class _Run:
    def __init__(self, store: Store, cfg: IndexConfig, progress: Progress, events: Events):
        self.store, self.cfg, self.progress = store, cfg, progress
        self.report = IndexReport()

        def heard(event: PhaseEvent) -> None:  # the report keeps each phase's time, then the caller hears it
            self.report.phases[event.phase] = event.seconds
            events(event)
        self.events = heard
        self.embed = (Embed(store, cfg.embed, self.report, progress, cfg.embed_batch, cfg.known_bytes)
                      if cfg.vector_index != "none" else None)

    def run(self, targets: list[plan.Target]) -> IndexReport:
        started = time.time()
        # Checkpoints (copying the WAL back into the database file) wait until the run is over:
        # done every 1000 pages, they were a third of the time spent writing chunks. The WAL is
        # capped at about 400 MB; a killed run's WAL is checkpointed by the next writer.
        self.store.checkpoint_every(100000)
        plan.check_after_bad_end(self.store)
        with self.store.transaction(data=False) as conn:
            run_id = runs.start(conn, started)
        # A rebuild is one transaction: queries see the old index until the new one is whole
        # (vectors included), and a rebuild that is killed leaves the old index as it was
        with self.store.held() if self.cfg.rebuild else nullcontext():
            self._plan_and_write(targets)
            if self.cfg.rebuild and self.embed is not None:
                self.embed.run(self.events)
        with ThreadPoolExecutor(2, thread_name_prefix="kb-derive") as pool:
            # The BM25 cache needs only the postings, final now: it is built while the GPU embeds
            # what it has left
            bm25 = derive.start_bm25(pool, self.store)
            if not self.cfg.rebuild and self.embed is not None:
                self.embed.run(self.events)
            vectors = (self.cfg.embed, self.cfg.vector_index, self.embed.known) if self.embed else None
            self.report.vector_index = derive.derive(self.store, pool, bm25, vectors, self.events)
        self.report.seconds = round(time.time() - started, 3)
        self.store.checkpoint_every(1000)  # the commit below checkpoints
        with self.store.transaction(data=False) as conn:
            runs.finish(conn, run_id, "partial" if self.report.errors else "ok", self.report.to_json())
        return self.report

    def _plan_and_write(self, targets: list[plan.Target]) -> None:
        t0 = time.perf_counter()
        plan.check_settings(self.store, plan.fingerprint(load_tokenizer(self.cfg.embed.model), self.cfg.chunk),
                            self.cfg.rebuild, self.cfg.vector_index)
        work = plan.walk_targets(targets, self.cfg.follow_symlinks, self.cfg.gitignore)
        self.report.warnings += [path_text(w) for w in work.walked.warnings]
        self.report.passed_over = dict(sorted(work.walked.passed_over.items()))
        self.events(PhaseEvent("plan", round(time.perf_counter() - t0, 3),
                               {"targets": len(targets), "files": work.files}))
        reader = Reader(ReadConfig(self.cfg.max_file_mb, self.cfg.chunk, self.cfg.embed.model), self.cfg.workers,
                        nice=self.cfg.worker_nice)
        sink = self.embed if self.embed is not None else _NoSink()
        Write(self.store, reader, sink, self.report, self.progress, self.cfg.batch_files).run(work, self.events)


class _NoSink:
    """A BM25-only run: nothing is embedded."""
    wants_rows = False

    def collect(self, conn) -> None:
        pass

    def committed(self, rows: list) -> None:
        pass
