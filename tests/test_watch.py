"""`kb index --watch` with a real watcher process: an edit, a new file and a deletion show in
queries within 2 s; a SIGKILL of the watcher while it writes leaves a store the next run
completes (kb check, and the same documents as a fresh index)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import completes_like_fresh, kb

pytestmark = pytest.mark.slow  # real processes, waiting on the file system


def _watcher(folder: Path, db: Path) -> subprocess.Popen:
    # Ctrl-C as in a terminal: a shell's background job (a CI script run with `&`) starts with
    # SIGINT ignored, and Python keeps an inherited ignore
    proc = subprocess.Popen([sys.executable, "-m", "kb.cli", "index", str(folder), "--db", str(db), "--watch",
                             "--json", "--vector-index", "none"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    json.loads(proc.stdout.readline())  # the first run is done: the watcher is watching
    return proc


def _paths(db: Path, words: str) -> set[str]:
    out = kb("query", words, "--db", db, "--json", "--mode", "bm25", "-k", "50").stdout
    return {h["path"] for h in json.loads(out)["results"]}


def _within(seconds: float, check) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if check():
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"not seen within {seconds} s")


def test_edits_additions_and_deletions_show_within_two_seconds(tmp_path):
    folder, db = tmp_path / "notes", tmp_path / "s"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nthe heron count\n")
    (folder / "b.md").write_text("# B\n\nthe otter census\n")
    proc = _watcher(folder, db)
    try:
        (folder / "a.md").write_text("# A\n\nthe kingfisher tally\n")
        _within(2.0, lambda: _paths(db, "kingfisher") == {"a.md"})
        (folder / "c.md").write_text("# C\n\nthe badger ledger\n")
        _within(2.0, lambda: _paths(db, "badger") == {"c.md"})
        (folder / "b.md").unlink()
        _within(2.0, lambda: not _paths(db, "otter"))
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130


def test_sigkill_of_the_watcher_mid_write_leaves_a_store_the_next_run_completes(tmp_path):
    folder, db = tmp_path / "notes", tmp_path / "s"
    folder.mkdir()
    (folder / "seed.md").write_text("seed")
    proc = _watcher(folder, db)
    for i in range(1500):
        (folder / f"n{i}.md").write_text(f"# Note {i}\n\n" + "the heron count and the otter census " * 40)
    time.sleep(1.0)  # the watcher is writing its run of these
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    completes_like_fresh(db, folder, tmp_path / "fresh")
