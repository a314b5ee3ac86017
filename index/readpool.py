"""The read phase of `kb index`: files into documents (extract text with kb.index.formats, chunk,
tokenise, analyse for BM25), in worker processes when there are many: this is most of `kb index`'s
CPU time, and each file is independent. The main process only writes what the workers return, in
the files' order, so a run's result does not depend on how many workers read.
"""

from __future__ import annotations

import hashlib
import os
import select
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from kb.index.bm25 import TermBags
from kb.index.chunker import ChunkConfig, chunk_text
from kb.index.formats import Skip, extract
from kb.index.store.documents import NewDoc

PARALLEL_FROM = 32  # files to read before worker processes pay for their start


@dataclass(frozen=True)
class ReadJob:
    path: str
    root: str
    kind: str
    size: int
    mtime_ns: int


@dataclass
class ReadResult:
    doc: NewDoc | None  # None: cannot be read now (the old entry is kept)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    skipped: bool = False


@dataclass(frozen=True)
class ReadConfig:
    max_file_mb: float
    chunk: ChunkConfig
    model: str | None  # the embedding model whose tokenizer measures chunks


def read_document(job: ReadJob, cfg: ReadConfig) -> ReadResult:
    from kb.embed.tokenizer import load_tokenizer
    from kb.index.analyzer import chunk_terms

    out = ReadResult(None)
    note, chunks, digest, terms = None, [], "", TermBags.of([])
    if job.size > cfg.max_file_mb * 2**20:
        note = f"larger than {cfg.max_file_mb:g} MB (--max-file-mb)"
    else:
        try:
            data = Path(job.path).read_bytes()
        except FileNotFoundError:
            return out  # deleted since the walk: the next run removes it
        except OSError as e:
            out.error = f"{job.path}: cannot read ({e.strerror or e})"
            return out
        digest = hashlib.sha256(data).hexdigest()
        tokenizer = load_tokenizer(cfg.model)  # outside the try: a missing model stops the run
        try:
            text, warnings = extract(data, job.kind)
            out.warnings += [f"{job.path}: {w}" for w in warnings]
            chunks = chunk_text(text, job.kind, tokenizer, cfg.chunk)
            title = Path(job.path).stem
            terms = TermBags.of([chunk_terms(c.text, title, c.heading) for c in chunks])
            if not chunks:
                note = "empty file"
        except Skip as e:
            note = str(e)
        except ImportError:
            raise  # a broken install, not this file's fault
        except Exception as e:  # noqa: BLE001 - a bug, MemoryError, RecursionError on one odd file:
            # that file is skipped (and recorded, so the next run does not retry it until it changes);
            # the type only, so the warning stays one line
            note = f"cannot be read ({type(e).__name__})"
            chunks, terms = [], TermBags.of([])
    if note:
        out.skipped = True
        out.warnings.append(f"{job.path}: skipped, {note}")
    out.doc = NewDoc(job.path, job.root, job.kind, job.size, job.mtime_ns, digest, note, chunks, terms)
    return out


def _start_worker(nice: int, owner: int) -> None:
    """A reader process: at a lower priority, and gone as soon as `owner` (the kb process) is.
    A kb killed mid-run (SIGKILL from cron's timeout, the OOM killer) would otherwise leave its
    readers and their fork server behind for good, a reader blocked on a full result pipe."""
    if nice:
        os.nice(nice)
    threading.Thread(target=_exit_with, args=(owner,), name="kb-reader-owner", daemon=True).start()


def _exit_with(owner: int) -> None:
    try:
        fd = os.pidfd_open(owner)  # readable once the process has ended (Linux 5.3)
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        select.select([fd], [], [])
    else:
        while True:
            time.sleep(1.0)
            try:
                os.kill(owner, 0)
            except ProcessLookupError:
                break
            except PermissionError:
                pass
    os._exit(1)


class Reader:
    """`results(jobs)`: their ReadResults in order, read ahead by up to `window` files in `workers`
    processes (in this process when there is one worker or few files) running `nice` steps below
    this one (kb.index.indexer.IndexConfig.worker_nice says why)."""

    def __init__(self, cfg: ReadConfig, workers: int, nice: int, window: int = 256):
        self.cfg, self.window, self.nice = cfg, window, nice
        self.workers = workers or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None

    def results(self, jobs):
        jobs = list(jobs)
        if self.workers < 2 or len(jobs) < PARALLEL_FROM:
            for job in jobs:
                yield read_document(job, self.cfg)
            return
        if self._pool is None:
            self._start()
        ahead: deque = deque()  # (job, its future), in the files' order
        for job in jobs:
            ahead.append((job, self._pool.submit(read_document, job, self.cfg)))
            if len(ahead) >= self.window:
                yield self._next(ahead)
        while ahead:
            yield self._next(ahead)

    def _start(self) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("forkserver")
        # The fork server imports the reading code (numpy, tokenizers, the stemmer) once; each
        # worker forks from it instead of importing them again.
        ctx.set_forkserver_preload(["kb.index.readpool", "kb.index.analyzer", "kb.embed.tokenizer"])
        self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_start_worker,
                                         initargs=(self.nice, os.getpid()))

    def _next(self, ahead: deque) -> ReadResult:
        """The first file's result. A reader that dies (killed for its memory, a crash in a native
        library) breaks the whole pool and every file in flight: the first of them is read again
        alone in a new pool; if that one dies too it is the file to blame, and it is recorded as
        skipped (read again only once it changes), so that it cannot stop every run. The other
        files in flight are submitted again."""
        job, future = ahead.popleft()
        try:
            return future.result()
        except BrokenProcessPool:
            pass
        result = self._alone(job)
        for i, (other, _) in enumerate(ahead):
            ahead[i] = (other, self._pool.submit(read_document, other, self.cfg))
        return result

    def _alone(self, job: ReadJob) -> ReadResult:
        self._restart()
        try:
            return self._pool.submit(read_document, job, self.cfg).result()
        except BrokenProcessPool:
            self._restart()
        note = "its reader process died (out of memory, or a crash in a library)"
        doc = NewDoc(job.path, job.root, job.kind, job.size, job.mtime_ns, "", note, [], TermBags.of([]))
        return ReadResult(doc, [f"{job.path}: skipped, {note}"], skipped=True)

    def _restart(self) -> None:
        self.close()
        self._start()

    def close(self) -> None:
        if self._pool is not None:
            # Idle workers exit on their own: the run does not wait for each of them to go.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
