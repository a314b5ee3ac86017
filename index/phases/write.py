"""Write: each target's files brought up to date in the store, the documents read ahead by the
read phase (kb.index.readpool), one transaction per batch of files, so that a run killed at any
point leaves the store as it was after its last committed batch. Files vanished from a folder are
removed at the end of its target. New chunks go to the embed phase once their batch is committed.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from kb.index.phases import Events, PhaseEvent, Stopwatch
from kb.index.phases.plan import Plan, Target
from kb.index.readpool import Reader, ReadJob
from kb.index.store import Store, documents
from kb.index.store.documents import DocRow, NewDoc
from kb.index.store.terms import TermIds
from kb.index.walker import Found, WalkReport
from kb.names import path_text


class ChunkSink(Protocol):
    """Where new chunks go once committed (the embed phase: kb.index.phases.embed.Embed)."""
    wants_rows: bool  # whether to collect (text hash, token ids) of new chunks at all

    def collect(self, conn) -> None: ...  # inside a batch's transaction: store vectors that are ready
    def committed(self, rows: list) -> None: ...  # the batch's new chunks, now committed


class Write:
    def __init__(self, store: Store, reader: Reader, sink: ChunkSink, report, progress, batch_files: int):
        self.store, self.reader, self.sink = store, reader, sink
        self.report, self.progress, self.batch_files = report, progress, batch_files
        self.terms = TermIds(store.conn)
        # documents written before then were analysed by an older kb: read again (kb.index.phases.plan)
        self.stale_before = float(store.meta("reread_before") or 0)
        self.read_wait = Stopwatch()  # the writer waiting for the readers
        self.files_read = 0
        self._reads = iter(())
        self._new_rows: list = []

    def run(self, plan: Plan, events: Events) -> None:
        """Every target of `plan`, in order; then the read and write phases' events."""
        t0, files = time.perf_counter(), plan.files
        self.progress.start(files)
        try:
            for target, found in plan.work:
                self._target(target, found, plan.walked)
        finally:
            self.reader.close()
            self.progress.finish()
        r = self.report
        events(PhaseEvent("read", round(self.read_wait.seconds, 3), {"files": self.files_read}))
        events(PhaseEvent("write", round(time.perf_counter() - t0 - self.read_wait.seconds, 3),
                          {"files": files, "added": r.added, "updated": r.updated, "unchanged": r.unchanged,
                           "removed": r.removed, "chunks_added": r.chunks_added, "chunks_removed": r.chunks_removed}))

    def _target(self, target: Target, files: list[Found], walked: WalkReport) -> None:
        # Read here, not when planning: an earlier target may have written some of these paths
        existing = documents.docs_under(self.store.conn, path_text(target.file or target.root))
        root = str(target.root)
        self._reads = self.reader.results(
            ReadJob(str(f.path), root, f.kind, f.stat.st_size, f.stat.st_mtime_ns) for f in files
            if not _unchanged(existing.get(path_text(f.path)), f, self.stale_before))
        # The first transactions are small, so that the GPU feed (and anyone reading the store)
        # gets the first chunks early; then batch_files per transaction.
        i, size = 0, min(8, self.batch_files)
        while i < len(files):
            self._batch(target, files[i:i + size], existing)
            i, size = i + size, min(2 * size, self.batch_files)
        seen = {path_text(f.path) for f in files}
        keep = [path_text(d) + "/" for d in walked.unreadable_dirs]
        vanished = [d.id for p, d in existing.items()
                    if p not in seen and not any(p.startswith(k) for k in keep) and not _named_once(p)]
        if vanished:
            with self.store.transaction() as conn:
                self.report.chunks_removed += documents.delete_documents(conn, vanished)
            self.report.removed += len(vanished)

    def _batch(self, target: Target, files: list[Found], existing: dict[str, DocRow]) -> None:
        self._new_rows = []
        try:
            with self.store.transaction() as conn:
                for f in files:
                    self.progress.advance(f.path, self._file(conn, target, f, existing.get(path_text(f.path))))
                self.sink.collect(conn)
        except BaseException:
            self.terms.reset()  # ids handed out in the rolled-back transaction are void
            raise
        self.sink.committed(self._new_rows)  # committed: the GPU may embed them now

    def _file(self, conn, target: Target, f: Found, old: DocRow | None) -> int:
        """Bring one file's entry up to date; the tokens of its chunks if it was read (for the
        progress display's rate), else 0."""
        root, st = path_text(target.root), f.stat
        if _unchanged(old, f, self.stale_before):
            if old.root != root:
                documents.touch_document(conn, old.id, root, st.st_size, st.st_mtime_ns)
            self.report.unchanged += 1
            return 0
        doc = self._read(f)
        if doc is None:
            return 0
        tokens = sum(len(c.token_ids) for c in doc.chunks)
        if old and old.hash == doc.hash and old.indexed_at >= self.stale_before:
            documents.touch_document(conn, old.id, root, st.st_size, st.st_mtime_ns)
            self.report.unchanged += 1
            return tokens
        added, removed = documents.write_document(conn, self.terms, doc, old.id if old else None,
                                                  self._new_rows if self.sink.wants_rows else None)
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
        with self.read_wait:
            r = next(self._reads)
        self.files_read += 1
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


def _unchanged(old: DocRow | None, f: Found, stale_before: float) -> bool:
    """Same size and modification time as when it was indexed, by today's analysis: not read again."""
    return (old is not None and old.size == f.stat.st_size and old.mtime_ns == f.stat.st_mtime_ns
            and old.indexed_at >= stale_before)


def _named_once(path: str) -> bool:
    """A file of a type the walk passes over, indexed because it was named on the command line
    (`kb index notes.xyz`), is kept while it exists: walking its folder does not drop it."""
    from kb.index.formats import kind_of

    p = Path(path)
    return kind_of(p) is None and p.is_file()
