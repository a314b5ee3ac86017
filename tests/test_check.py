"""`kb check`: damage inside kb.sqlite, stale or broken derived files and orphan rows are found,
each failure is exit 4 with one line on stderr, and `--repair` fixes what is derived."""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import SAMPLE, damage, kb, kb_json

pytestmark = pytest.mark.slow  # every test runs kb in a subprocess on a store indexed by one


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """One store of sample_corpus for the module (an index run is most of each test's time)."""
    root = tmp_path_factory.mktemp("check")
    shutil.copytree(SAMPLE, root / "corpus")
    kb("index", root / "corpus", "--db", root / "store", "--quiet", "--vector-index", "none")
    return root / "store"


@pytest.fixture
def store(pristine: Path, db: Path) -> Path:
    shutil.copytree(pristine, db)
    return db


def failing(*args) -> tuple[dict, str]:
    """`kb check --json` that must fail: its report and its one stderr line."""
    proc = kb("check", *args, "--json", check=4)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kb: error: "), proc.stderr
    return json.loads(proc.stdout), lines[0]


def whats(report: dict) -> set[str]:
    return {p["what"] for p in report["problems"]}


def test_healthy_store_passes(store):
    report = kb_json("check", "--db", store)
    assert report == {"db": str(store.resolve()), "ok": True, "problems": [], "repaired": []}
    assert kb("check", "--db", store).stdout.strip().endswith(": ok")


def test_overwritten_pages_fail_integrity_and_cannot_be_repaired(store):
    path = store / "kb.sqlite"
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536  # the header's page size (1 means 64 KiB)
    assert len(data) >= 6 * page
    rng = random.Random(17)
    data[2 * page:6 * page] = rng.randbytes(4 * page)  # pages 3..6 (1-based)
    path.write_bytes(bytes(data))
    report, line = failing("--db", store)
    assert whats(report) == {"integrity"} and not report["problems"][0]["repairable"]
    assert "integrity" in line
    report, line = failing("--db", store, "--repair")
    assert report["repaired"] == [] and "move the store's folder aside" in line
    assert path.read_bytes() == bytes(data)  # a damaged database is left as it is


def test_zero_byte_database_is_damage(store):
    (store / "kb.sqlite").write_bytes(b"")
    report, line = failing("--db", store)
    assert whats(report) == {"database"} and "empty" in line
    failing("--db", store, "--repair")
    assert (store / "kb.sqlite").stat().st_size == 0


def _stale(store: Path) -> None:
    with sqlite3.connect(store / "kb.sqlite") as conn:
        conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'data_version'")
    conn.close()


@pytest.mark.parametrize("harm, word", [(lambda s: damage(s / "bm25.npz"), "unreadable"),
                                        (_stale, "stale"),
                                        (lambda s: (s / "bm25.npz").unlink(), "missing")])
def test_bm25_cache_problems_are_repaired(store, harm, word):
    harm(store)
    report, line = failing("--db", store)
    assert whats(report) == {"bm25"} and word in line and "--repair" in line
    repaired = kb_json("check", "--db", store, "--repair")
    assert repaired["ok"] and repaired["repaired"] == ["bm25: rebuilt bm25.npz"]
    assert kb_json("check", "--db", store)["ok"]


def test_orphan_rows_are_deleted_in_one_repair(store):
    with sqlite3.connect(store / "kb.sqlite") as conn:
        conn.execute("INSERT INTO chunks(id, doc_id, seq, start_line, end_line, heading, text, hash, "
                     "token_ids, n_terms) VALUES (900001, 424242, 0, 1, 1, '', 'lost', 'h', x'', 0)")
        conn.execute("INSERT INTO chunk_terms VALUES (900002, x'')")
    conn.close()
    report, _ = failing("--db", store)
    orphans = sorted(p["detail"] for p in report["problems"] if p["what"] == "orphans")
    assert orphans == ["1 chunk_terms row(s) point to no chunks row", "1 chunks row(s) point to no documents row"]
    repaired = kb_json("check", "--db", store, "--repair")
    assert repaired["ok"], repaired
    assert {"orphans: deleted 1 chunks row(s)", "orphans: deleted 1 chunk_terms row(s)",
            "bm25: rebuilt bm25.npz"} <= set(repaired["repaired"])
    with sqlite3.connect(store / "kb.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM chunks WHERE id = 900001").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM chunk_terms WHERE chunk_id >= 900001").fetchone() == (0,)
    conn.close()
    assert kb_json("check", "--db", store)["ok"]


def test_unreadable_kv_cache_is_dropped(store):
    (store / "kv").mkdir()
    (store / "kv" / "sources.db").write_bytes(b"not a database, and long enough to be read as one" * 100)
    report, _ = failing("--db", store)
    assert whats(report) == {"kv"}
    assert kb_json("check", "--db", store, "--repair")["ok"]
    assert not (store / "kv").exists()


def test_checking_writes_nothing(store):
    before = {p.name: p.read_bytes() for p in store.iterdir() if not p.name.startswith("kb.sqlite-")}
    kb("check", "--db", store)
    after = {p.name: p.read_bytes() for p in store.iterdir() if not p.name.startswith("kb.sqlite-")}
    assert after == before


def test_read_only_store_is_checked(store):
    """As another user when run as root (root ignores file modes)."""
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("root, and no setpriv to check as another user")
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    top = Path(tempfile.mkdtemp())
    try:
        ro = top / "store"
        shutil.copytree(store, ro)
        for p in ro.iterdir():
            p.chmod(0o444)
        ro.chmod(0o555)
        top.chmod(0o755)
        proc = subprocess.run([*prefix, sys.executable, "-m", "kb.cli", "check", "--db", str(ro)],
                              capture_output=True, text=True, timeout=120, cwd=top)
        assert proc.returncode == 0, proc.stderr
        assert sorted(p.name for p in ro.iterdir()) == sorted(p.name for p in store.iterdir())
    finally:
        ro.chmod(0o755)
        shutil.rmtree(top)


@pytest.mark.slow
def test_vector_index_problems_are_repaired(corpus, db):
    kb("index", corpus, "--db", db, "--quiet")
    damage(db / "vectors.npz")
    report, line = failing("--db", db)
    assert "vectors" in whats(report) and all(p["repairable"] for p in report["problems"])
    repaired = kb_json("check", "--db", db, "--repair")
    assert repaired["ok"] and any(r.startswith("vectors: rebuilt vectors.npz") for r in repaired["repaired"])
    assert kb_json("check", "--db", db)["ok"]
    kb("query", "sourdough", "--db", db, "--mode", "vector")
