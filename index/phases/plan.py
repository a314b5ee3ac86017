"""Plan: what a run will look at. Before anything is written, the store's settings are checked
against the run's (a store built otherwise needs --rebuild), and each target is walked into its
list of files."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from kb.embed.tokenizer import Tokenizer
from kb.errors import NotFound, StoreIncompatible, UsageError
from kb.index.analyzer import ANALYZER_VERSION
from kb.index.chunker import ChunkConfig
from kb.index.store import Store, damage, documents, runs
from kb.index.store.migrations import SCHEMA_VERSION
from kb.index.walker import Found, WalkReport, walk
from kb.names import path_text


@dataclass(frozen=True)
class Target:
    root: Path  # resolved folder; result paths are relative to it
    file: Path | None  # a single file given on the command line, else the whole folder
    include: tuple[str, ...] = ()  # its collection's rules (kb.index.collections)
    exclude: tuple[str, ...] = ()


@dataclass
class Plan:
    work: list[tuple[Target, list[Found]]]  # each target with its files, in walk order
    walked: WalkReport = field(default_factory=WalkReport)  # warnings, folders that could not be read

    @property
    def files(self) -> int:
        return sum(len(files) for _, files in self.work)


def resolve_targets(paths: list[str | Path]) -> list[Target]:
    """The command line's paths as targets: NotFound or UsageError before anything is touched."""
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
        targets.append(Target(real, None) if real.is_dir() else Target(real.parent, real))
    return targets


def fingerprint(tokenizer: Tokenizer, chunk: ChunkConfig) -> dict:
    """What the stored chunks and postings depend on: a store built with another is rebuilt."""
    return {"schema": SCHEMA_VERSION, **tokenizer.fingerprint(), "chunking": chunk.fingerprint(),
            "analyzer": ANALYZER_VERSION}


def check_after_bad_end(store: Store) -> None:
    """SQLite's quick check, once after a run that did not end well (killed, failed: the
    machine may have crashed with it): a damaged store stops here, before more is written."""
    row = runs.last(store.conn)
    if row is None or row[3] != "running" or store.meta("checked_after_run") == str(row[0]):
        return
    problem = damage(store.dir)
    if problem:
        raise StoreIncompatible(f"the store is damaged ({problem}); `kb check` says more; move its folder "
                                "aside and run `kb index` again, or restore a backup")
    with store.transaction(data=False):
        store.set_meta("checked_after_run", str(row[0]))


def check_settings(store: Store, wanted: dict, rebuild: bool, vector_index: str) -> None:
    """Refuse a store whose chunks were made otherwise (`wanted`: fingerprint()) unless this run
    rebuilds it (it is emptied here); remember the settings of this run. A store analysed for BM25
    otherwise (an older kb) is not refused: its documents are read again, by this run and later
    ones until each is (`reread_before`: documents written before then are stale)."""
    have = store.fingerprint()
    indexed = have is not None and documents.has_documents(store.conn)
    if indexed and _settings(have) != _settings(wanted) and not rebuild:
        changed = sorted(k for k in wanted if have.get(k) != wanted[k])
        raise StoreIncompatible(
            f"store {store.dir} was built with other settings ({', '.join(changed)}); "
            "run `kb index --rebuild PATH...` to index afresh")
    if rebuild:
        with store.transaction() as conn:
            documents.clear_all(conn)
    if have != wanted:
        with store.transaction(data=False):
            if indexed and have.get("analyzer") != wanted["analyzer"]:
                store.set_meta("reread_before", repr(time.time()))
            store.set_meta("fingerprint", json.dumps(wanted, sort_keys=True))
    if store.meta("vector_index") != vector_index:
        with store.transaction(data=False):
            store.set_meta("vector_index", vector_index)


def _settings(fingerprint: dict) -> dict:
    """What a store cannot change without being rebuilt: all but the BM25 analysis."""
    return {k: v for k, v in fingerprint.items() if k != "analyzer"}


def walk_targets(targets: list[Target], follow_symlinks: bool, gitignore: bool = True) -> Plan:
    plan = Plan([])
    plan.work = [(t, _files(t, plan.walked, follow_symlinks, gitignore)) for t in targets]
    return plan


def _files(target: Target, walked: WalkReport, follow_symlinks: bool, gitignore: bool) -> list[Found]:
    if target.file is not None:
        from kb.index.formats import kind_of

        # A file named on the command line is read even with an unknown extension: as text.
        return [Found(target.file, kind_of(target.file) or "text", target.file.stat())]
    files, names = [], set()
    for f in walk(target.root, walked, follow_symlinks, gitignore, target.include, target.exclude):
        name = path_text(f.path)
        if name in names:  # `a\xff` spelt out, beside a name holding the byte itself
            walked.warnings.append(f"{f.path}: skipped, its name reads like another file's ({name})")
            continue
        names.add(name)
        files.append(f)
    return files
