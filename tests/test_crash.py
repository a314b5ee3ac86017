"""Cron safety with real processes: SIGKILL at random points, then a normal run must leave exactly
the store an uninterrupted run builds; queries keep working while a run writes; a second writer
gives up with exit code 75."""

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

import storeview
from conftest import REPO, SAMPLE, kb

pytestmark = pytest.mark.slow  # SIGKILL of real kb processes, the real model


def make_corpus(root, n, seed):
    rng = random.Random(seed)
    words = " ".join(p.read_text(errors="replace") for p in SAMPLE.rglob("*.md")).split()
    root.mkdir(exist_ok=True)
    for i in range(n):
        sub = root / f"d{i % 7}"
        sub.mkdir(exist_ok=True)
        lines = [f"# Note {i}"] + [" ".join(rng.choices(words, k=rng.randint(8, 30))) for _ in range(30)]
        (sub / f"n{i:04d}.md").write_text("\n".join(lines) + "\n")
    return rng


def vectors_of(db):
    conn = sqlite3.connect(db / "kb.sqlite")
    rows = dict(conn.execute("SELECT hash, vector FROM embeddings"))
    conn.close()
    return {h: np.frombuffer(v, dtype=np.float32) for h, v in rows.items()}


def same_vectors(db_a, db_b):
    a, b = vectors_of(db_a), vectors_of(db_b)
    assert a.keys() == b.keys()
    for h in a:  # batches differ between runs, so the last bits may too
        np.testing.assert_allclose(a[h], b[h], atol=1e-5)


def snapshot(db):
    """Everything a query can see, independent of row ids."""
    conn = sqlite3.connect(db / "kb.sqlite")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    docs = conn.execute("SELECT path, hash FROM documents ORDER BY path").fetchall()
    assert len(docs) == len({p for p, _ in docs})
    chunks = sorted(conn.execute(
        "SELECT d.path, c.seq, c.start_line, c.end_line, c.text, c.n_terms FROM chunks c "
        "JOIN documents d ON d.id = c.doc_id").fetchall())
    hashes = dict(conn.execute("SELECT id, hash FROM chunks"))
    postings = sorted((hashes[c], term, tf) for c, term, tf in storeview.postings(conn))
    orphans = conn.execute("SELECT count(*) FROM chunk_terms WHERE chunk_id NOT IN (SELECT id FROM chunks)"
                           ).fetchone()[0]
    assert conn.execute("SELECT count(*) FROM chunks WHERE id NOT IN (SELECT chunk_id FROM chunk_terms)"
                        ).fetchone()[0] == 0
    conn.close()
    assert orphans == 0
    return docs, chunks, postings


def queries_agree(db_a, db_b, terms, mode="bm25", tolerance=1e-6):
    """Every matching chunk with the same score. (A top-k cut is not compared: equal scores are
    ordered by chunk id, and ids differ between a resumed store and a fresh one.)"""
    for q in terms:
        a, b = ({(r["path"], r["start_line"]): r["score"] for r in json.loads(
                    kb("query", q, "--db", d, "--json", "--mode", mode, "-k", "100000").stdout)["results"]}
                for d in (db_a, db_b))
        assert a and a.keys() == b.keys(), q
        assert all(abs(a[c] - b[c]) <= tolerance for c in a), q


def start_index(corpus, db, *extra):
    extra = extra or START_ARGS
    return subprocess.Popen([sys.executable, "-m", "kb.cli", "index", str(corpus), "--db", str(db),
                             "--quiet", *extra], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def kill_at_random(corpus, db, rng, duration, times):
    for _ in range(times):
        proc = start_index(corpus, db)
        time.sleep(rng.uniform(0.05, duration))
        proc.send_signal(signal.SIGKILL)
        proc.wait()


START_ARGS: tuple = ()


@pytest.mark.parametrize("seed, vectors", [(1, True), (2, False), (3, False)])
def test_sigkill_at_random_points_then_complete(tmp_path, seed, vectors, monkeypatch, tiny_encoder):
    """With vectors, runs die while embedding and writing the vector index too (the tiny encoder:
    what is tested is where a kill lands, which the real model only makes slower: 228 s in CI)."""
    args = ("--model", str(tiny_encoder)) if vectors else ("--vector-index", "none")
    monkeypatch.setattr(sys.modules[__name__], "START_ARGS", args)
    corpus = tmp_path / "corpus"
    rng = make_corpus(corpus, 200 if vectors else 400, seed)
    t0 = time.monotonic()
    kb("index", corpus, "--db", tmp_path / "reference", "--quiet", *args)
    duration = time.monotonic() - t0

    db = tmp_path / "store"
    kill_at_random(corpus, db, rng, duration, times=3)
    conn = sqlite3.connect(db / "kb.sqlite")
    killed = conn.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()[0]
    conn.close()
    assert killed >= 1  # the kills did land inside runs, not only before or after them
    kb("index", corpus, "--db", db, "--quiet", *args)
    assert snapshot(db) == snapshot(tmp_path / "reference")
    if vectors:
        same_vectors(db, tmp_path / "reference")

    # Now an incremental run is killed: edit, delete and add files, kill, complete.
    files = sorted(corpus.rglob("*.md"))
    for f in rng.sample(files, 60):
        f.write_text(f.read_text() + "\nedited line with zebra words\n")
    for f in rng.sample(files, 30):
        f.unlink(missing_ok=True)
    make_corpus(corpus / "new", 40, seed + 100)
    kill_at_random(corpus, db, rng, duration / 2, times=2)
    kb("index", corpus, "--db", db, "--quiet", *args)
    kb("index", corpus, "--db", tmp_path / "fresh", "--quiet", *args)
    assert snapshot(db) == snapshot(tmp_path / "fresh")
    queries_agree(db, tmp_path / "fresh", ["zebra words", "sourdough starter", "git rebase"])
    if vectors:
        same_vectors(db, tmp_path / "fresh")
        queries_agree(db, tmp_path / "fresh", ["zebra words", "bread"], mode="vector", tolerance=1e-4)


def test_queries_work_while_an_index_run_writes(tmp_path):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, 60, 5)
    db = tmp_path / "store"
    kb("index", corpus, "--db", db, "--quiet", "--vector-index", "none")
    make_corpus(corpus / "more", 600, 6)
    writer = start_index(corpus, db, "--vector-index", "none")
    answered = 0
    try:
        while writer.poll() is None and answered < 20:
            proc = kb("query", "note", "--db", db, "--json", "-k", "3")
            assert '"results"' in proc.stdout
            answered += 1
        if writer.poll() is None:
            busy = kb("index", corpus, "--db", db, "--wait", "0", "--vector-index", "none", check=75)
            assert "another kb index" in busy.stderr
    finally:
        writer.wait(timeout=300)
    assert answered >= 1 and writer.returncode == 0, writer.stderr.read()


def _reader_processes() -> set[int]:
    """Processes of multiprocessing's fork server (kb's readers are forked from one)."""
    from pathlib import Path

    found = set()
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and b"multiprocessing.forkserver" in (p / "cmdline").read_bytes():
                found.add(int(p.name))
        except OSError:
            pass
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killed_run_leaves_no_reader_processes(tmp_path):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, 300, seed=9)
    before = _reader_processes()
    proc = start_index(corpus, tmp_path / "db", "--vector-index", "none")
    deadline = time.time() + 60
    while not _reader_processes() - before and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert _reader_processes() - before, "the run did not start its readers"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while _reader_processes() - before and time.time() < deadline:
        time.sleep(0.1)
    assert not _reader_processes() - before  # readers and their fork server went with it
