"""`kb index --watch`: keep a store fresh as files change, for people who would rather not use
cron. A normal `kb index` run first (it adds the folders given as collections), then one more
run each time files under the watched folders settle (watchfiles' debounce), through the same
lock and the same incremental path as any run: an unchanged file costs a stat, and a kill at any
moment leaves what a killed `kb index` leaves. The encoder is loaded once, before the first
change, so that a change shows in queries within a second or two, not after loading torch."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from kb.index import collections
from kb.index.indexer import IndexConfig, IndexReport, index_paths
from kb.index.store import Store, default_db_dir

DEBOUNCE_MS = 300  # changes closer together than this are one run


def watch(paths: list[str | Path], db: str | Path | None, cfg: IndexConfig, settings: collections.Settings,
          on_run: Callable[[IndexReport], None], stop: threading.Event | None = None,
          progress=None) -> None:
    """Index, then index again after every settled batch of changes, until `stop` is set (or
    Ctrl-C). `on_run` hears each run's report. The first run starts once the watch is live, so
    that no change made after the first report is missed."""
    import watchfiles

    store_dir = Path(db).expanduser().resolve() if db else default_db_dir().resolve()
    folders = _folders(paths, store_dir)
    if cfg.vector_index != "none":
        from kb.embed import load_encoder

        load_encoder(cfg.embed)  # the same cached encoder the runs use: torch loads now, not on a change
    first = True
    # yield_on_timeout: an empty batch when nothing changed for rust_timeout ms; the first one
    # says the watch is live
    for changes in watchfiles.watch(*folders, watch_filter=_Filter(store_dir), debounce=DEBOUNCE_MS, step=50,
                                    stop_event=stop, raise_interrupt=True, yield_on_timeout=True, rust_timeout=100):
        if changes or first:
            on_run(index_paths(paths, db, cfg, progress, settings=settings if first else collections.Settings()))
            first = False


def _folders(paths: list[str | Path], store_dir: Path) -> list[Path]:
    """The folders given, else the store's collections' folders."""
    from kb.errors import UsageError
    from kb.index.phases.plan import resolve_targets

    if paths:
        found = [t.root for t in resolve_targets(paths) if t.file is None]
        if not found:
            raise UsageError("--watch watches folders: give one (or none, for every collection)")
        return found
    store = Store.open(store_dir)
    try:
        found = [Path(c.root) for c in collections.load(store).values() if Path(c.root).is_dir()]
    finally:
        store.close()
    if not found:
        raise UsageError("this store has no collections to watch: `kb index FOLDER --watch` adds one")
    return found


class _Filter:
    """Changes worth a run: not inside the store (its own writes would wake it forever), not
    under a hidden folder or of a hidden file (.git churns; the walk skips those anyway)."""

    def __init__(self, store_dir: Path):
        self.store_dir = str(store_dir)

    def __call__(self, change, path: str) -> bool:
        if path == self.store_dir or path.startswith(self.store_dir + "/"):
            return False
        return not any(part.startswith(".") for part in Path(path).parts)
