"""Collections (kb.index.collections): folders kept by name with their rules and context;
`kb index` without paths refreshes them; removing one leaves no row, vector, posting, derived
entry or KV block of it, and a SIGKILL during the removal leaves a store the next run completes."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import SAMPLE, kb
from inprocess import kb_run, kb_run_json
from kb.index.store.kv import KV_DIR, block_path, record_sources


@pytest.fixture
def two(tmp_path, tiny_encoder):
    """sample_corpus's tech and cooking folders as two collections of one store (tiny vectors)."""
    tech, cooking = (Path(shutil.copytree(SAMPLE / n, tmp_path / n)) for n in ("tech", "cooking"))
    store = tmp_path / "store"
    kb_run("index", tech, "--db", store, "--model", tiny_encoder, "--context", "Engineering notes", "--quiet")
    kb_run("index", cooking, "--db", store, "--model", tiny_encoder, "--name", "food", "--quiet")
    return tech, cooking, store


def _rows(store: Path) -> dict:
    conn = sqlite3.connect(store / "kb.sqlite")
    out = {"docs": dict(conn.execute("SELECT id, root FROM documents")),
           "chunks": dict(conn.execute("SELECT id, doc_id FROM chunks")),
           "hashes": {h for (h,) in conn.execute("SELECT hash FROM chunks")},
           "posted": {c for (c,) in conn.execute("SELECT DISTINCT chunk_id FROM chunk_terms")},
           "vectors": {h for (h,) in conn.execute("SELECT hash FROM embeddings")}}
    conn.close()
    return out


def test_collections_are_listed_with_their_rules(two):
    tech, cooking, store = two
    listed = {c["name"]: c for c in kb_run_json("collections", "--db", store)["collections"]}
    assert listed["tech"]["root"] == str(tech) and listed["tech"]["context"] == "Engineering notes"
    assert listed["food"]["root"] == str(cooking) and listed["food"]["documents"] == len(list(cooking.iterdir()))
    assert kb_run("index", tech, "--db", store, "--name", "food", check=2).stderr.startswith("kb: error:")


def test_index_without_paths_refreshes_every_collection(two, tiny_encoder):
    tech, cooking, store = two
    for f in (tech / "sqlite-wal.md", cooking / "espresso-extraction.md"):
        f.write_text(f.read_text() + "\nthe okapi appendix\n")
    report = kb_run_json("index", "--db", store, "--model", tiny_encoder)
    assert (report["updated"], report["removed"]) == (2, 0)
    kb_run("index", cooking, "--db", store, "--model", tiny_encoder, "--exclude", "espresso*", "--quiet")
    again = kb_run_json("index", "--db", store, "--model", tiny_encoder)  # the rule is kept
    assert again["removed"] == 0 and again["passed_over"].get("ignored") == 1
    shutil.rmtree(tech)
    gone = kb_run_json("index", "--db", store, "--model", tiny_encoder)
    assert any("collection tech" in w and "gone" in w for w in gone["warnings"]) and gone["removed"] == 0


def test_search_within_collections(two):
    _, _, store = two
    hits = kb_run_json("query", "espresso sqlite", "-c", "food", "--db", store, "-k", "50")["results"]
    assert hits and {h["root"] for h in hits} == {str(two[1])}
    assert kb_run("query", "x", "-c", "nope", "--db", store, check=3).stderr.count("\n") == 1


def test_removing_a_collection_leaves_nothing_of_it(two):
    tech, cooking, store = two
    before = _rows(store)
    gone_docs = {d for d, root in before["docs"].items() if root == str(cooking)}
    gone_chunks = {c for c, d in before["chunks"].items() if d in gone_docs}
    # KV blocks on disk, as kb ask records them: one made from a removed chunk, one from a kept one
    folder = store / KV_DIR / "fp"
    kept_chunk = next(c for c, d in before["chunks"].items() if d not in gone_docs)
    digests = {}
    for name, chunk in (("gone", min(gone_chunks)), ("kept", kept_chunk)):
        ids = [hash(name) % 1000 + i for i in range(16)]
        record_sources(folder, 16, [(ids, [(0, chunk)])])
        from kb.common import ROOT_HASH, chain
        digests[name] = block_path(folder, chain(ROOT_HASH, tuple(ids)).hex())
        digests[name].parent.mkdir(parents=True, exist_ok=True)
        np.savez(digests[name], k=np.zeros(1))
    report = kb_run_json("collections", "remove", "food", "--db", store)
    assert (report["documents"], report["chunks"], report["kv_blocks"]) == (len(gone_docs), len(gone_chunks), 1)
    after = _rows(store)
    assert not gone_docs & after["docs"].keys() and not gone_chunks & after["chunks"].keys()
    assert not gone_chunks & after["posted"]
    assert after["vectors"] == after["hashes"]  # no vector of a text only the collection had
    assert not digests["gone"].exists() and digests["kept"].exists()
    for mode in ("bm25", "vector", "hybrid"):  # the derived files no longer hold its chunks
        hits = kb_run_json("query", "espresso grind coffee", "--mode", mode, "-k", "100", "--db", store)["results"]
        assert all(h["root"] == str(tech) for h in hits), mode
    assert kb_run_json("check", "--db", store)["ok"]
    assert [c["name"] for c in kb_run_json("collections", "--db", store)["collections"]] == ["tech"]


@pytest.mark.slow
def test_sigkill_during_removal_leaves_a_store_the_next_run_completes(tmp_path):
    corpus = tmp_path / "c"
    for i in range(300):
        (corpus / f"d{i % 7}").mkdir(parents=True, exist_ok=True)
        (corpus / f"d{i % 7}" / f"n{i}.md").write_text(f"# Note {i}\n\nthe heron count {i} " * 20)
    kept = Path(shutil.copytree(SAMPLE / "tech", tmp_path / "tech"))
    store = tmp_path / "s"
    kb("index", kept, "--db", store, "--quiet", "--vector-index", "none")  # BM25 only: fast, same removal
    for delay in (0.05, 0.3, 0.8, 2.0):
        kb("index", corpus, "--db", store, "--quiet")
        proc = subprocess.Popen([sys.executable, "-m", "kb.cli", "collections", "remove", "c", "--db", str(store)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        names = [c["name"] for c in json.loads(kb("collections", "--db", store, "--json").stdout)["collections"]]
        rows = _rows(store)
        if "c" in names:  # killed before the commit: all of it is still there
            assert sum(1 for r in rows["docs"].values() if r == str(corpus)) == 300
        else:  # after: none of it
            assert str(corpus) not in rows["docs"].values()
        kb("index", "--db", store, "--quiet")  # the next run completes what the kill left
        assert json.loads(kb("check", "--db", store, "--json").stdout)["ok"]
        hits = json.loads(kb("query", "heron count", "--db", store, "--json", "-k", "5", "--mode", "bm25").stdout)["results"]
        assert bool(hits) == ("c" in names)


def test_a_rebuild_with_paths_keeps_only_their_collections(two, tiny_encoder):
    tech, _, store = two
    kb_run("index", tech, "--db", store, "--model", tiny_encoder, "--rebuild", "--quiet")
    assert [c["name"] for c in kb_run_json("collections", "--db", store)["collections"]] == ["tech"]
    assert kb_run_json("collections", "--db", store)["collections"][0]["context"] == "Engineering notes"
