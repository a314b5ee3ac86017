"""Incremental indexing against a real SQLite store, through the library API."""

import os
import sqlite3
import stat
from pathlib import Path

import pytest
import storeview

from kb.errors import NotFound, StoreIncompatible
from kb.index.indexer import IndexConfig, index_paths
from kb.index.store.migrations import SCHEMA_VERSION
from kb.index.search import Searcher
from kb.index.store import DB_FILE, Store

BM25 = IndexConfig(vector_index="none")  # these tests are about documents and BM25


def paths_in(db):
    store = Store.open(db)
    try:
        return sorted(os.path.relpath(p, r) for p, r in store.conn.execute("SELECT path, root FROM documents"))
    finally:
        store.close()


def search(db, text, **kw):
    store = Store.open(db)
    try:
        return [h.path for h in Searcher(store).search(text, mode="bm25", **kw).results]
    finally:
        store.close()


def test_second_run_changes_nothing(corpus, db):
    first = index_paths([corpus], db, BM25)
    files = [p for p in corpus.rglob("*") if p.is_file() and "eval" not in p.parts and p.name != ".kbignore"]
    assert first.added == len(files) >= 30 and first.chunks_added > first.added
    store = Store.open(db)
    version = store.data_version
    store.close()
    cache_mtime = (db / "bm25.npz").stat().st_mtime_ns
    second = index_paths([corpus], db, BM25)
    assert (second.added, second.updated, second.removed, second.chunks_added, second.chunks_removed) == (0, 0, 0, 0, 0)
    assert second.unchanged == len(files)
    store = Store.open(db)
    assert store.data_version == version  # no document row was written
    store.close()
    assert (db / "bm25.npz").stat().st_mtime_ns == cache_mtime  # nor was the BM25 cache


def test_edit_updates_only_that_file_and_reuses_unchanged_chunks(corpus, db):
    index_paths([corpus], db, BM25)
    doc = corpus / "tech" / "sqlite-wal.md"
    doc.write_text(doc.read_text() + "\n## Backups\n\nUse the online backup API or VACUUM INTO for a copy.\n")
    report = index_paths([corpus], db, BM25)
    assert (report.added, report.updated, report.removed) == (0, 1, 0)
    assert report.chunks_added == 1 and report.chunks_removed == 0
    assert search(db, "VACUUM INTO backup")[0] == "tech/sqlite-wal.md"


def test_touch_without_change_reads_but_does_not_rewrite(corpus, db):
    index_paths([corpus], db, BM25)
    os.utime(corpus / "tech" / "git-rebase.md", ns=(1, 1))
    report = index_paths([corpus], db, BM25)
    assert report.unchanged == report.unchanged and report.updated == 0 and report.chunks_added == 0


def test_deleted_file_leaves_every_index(corpus, db):
    index_paths([corpus], db, BM25)
    assert search(db, "Gutenberg")[0] == "history/printing-press.md"
    (corpus / "history" / "printing-press.md").unlink()
    report = index_paths([corpus], db, BM25)
    assert report.removed == 1 and report.chunks_removed >= 1
    assert "history/printing-press.md" not in search(db, "Gutenberg printing press")
    store = Store.open(db)
    orphans = store.conn.execute(
        "SELECT count(*) FROM chunk_terms WHERE chunk_id NOT IN (SELECT id FROM chunks)").fetchone()[0]
    assert orphans == 0


def test_kbignore_hidden_and_unknown_files(corpus, db):
    (corpus / ".hidden.md").write_text("hidden secret words")
    (corpus / ".git").mkdir()
    (corpus / ".git" / "config.md").write_text("hidden secret words")
    (corpus / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (corpus / "drafts").mkdir()
    (corpus / "drafts" / "wip.md").write_text("draft secret words")
    (corpus / "drafts" / ".kbignore").write_text("*.md\n!keep.md\n")
    (corpus / "drafts" / "keep.md").write_text("kept secret words")
    index_paths([corpus], db, BM25)
    indexed = paths_in(db)
    assert "drafts/keep.md" in indexed
    assert not {".hidden.md", ".git/config.md", "photo.png", "drafts/wip.md"} & set(indexed)
    assert not any(p.startswith("eval/") for p in indexed)  # sample_corpus/.kbignore


def test_symlinks_outside_are_not_followed_and_loops_end(tmp_path, db):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(); outside.mkdir()
    (outside / "secret.md").write_text("outside words")
    (root / "a.md").write_text("inside words")
    (root / "link-out").symlink_to(outside)
    (root / "file-out.md").symlink_to(outside / "secret.md")
    (root / "loop").symlink_to(root)
    (root / "inner.md").symlink_to(root / "a.md")
    index_paths([root], db, BM25)
    assert paths_in(db) == ["a.md", "inner.md"]
    index_paths([root], db, IndexConfig(follow_symlinks=True, vector_index="none"))
    assert "link-out/secret.md" in paths_in(db)


def test_bad_files_are_recorded_once_with_a_reason(tmp_path, db):
    root = tmp_path / "root"
    root.mkdir()
    (root / "binary.txt").write_bytes(b"\x00\x01\x02" * 100)
    (root / "empty.md").write_text("")
    (root / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (root / "big.md").write_text("word " * 300_000)
    report = index_paths([root], db, IndexConfig(max_file_mb=1, vector_index="none"))
    assert report.skipped == 3 and report.errors == []
    joined = "\n".join(report.warnings)
    for needle in ("binary file", "empty file", "invalid UTF-8", "larger than 1 MB"):
        assert needle in joined
    assert search(db, "caf")  # decoded with replacement and indexed
    again = index_paths([root], db, IndexConfig(max_file_mb=1, vector_index="none"))
    assert again.warnings == [] and again.unchanged == 4


def test_unreadable_file_keeps_its_old_entry(corpus, db, monkeypatch):
    index_paths([corpus], db, BM25)
    target = corpus / "tech" / "dns-resolution.md"
    target.write_text(target.read_text() + "\nchanged\n")
    real = Path.read_bytes

    def deny(self):
        if self == target:
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", deny)
    report = index_paths([corpus], db, BM25)
    assert len(report.errors) == 1 and "dns-resolution.md" in report.errors[0]
    assert search(db, "recursive resolver TTL")[0] == "tech/dns-resolution.md"


def test_missing_path_changes_nothing(corpus, db):
    index_paths([corpus], db, BM25)
    before = paths_in(db)
    with pytest.raises(NotFound):
        index_paths([corpus, corpus / "nope"], db, BM25)
    assert paths_in(db) == before


def test_single_file_and_relative_paths(corpus, db):
    index_paths([corpus / "tech" / "git-rebase.md"], db, BM25)
    assert paths_in(db) == ["git-rebase.md"]
    index_paths([corpus / "tech"], db, BM25)
    assert "git-rebase.md" in paths_in(db) and len(paths_in(db)) == 6


def test_store_is_private(corpus, db):
    index_paths([corpus], db, BM25)
    assert stat.S_IMODE(db.stat().st_mode) == 0o700
    for f in db.iterdir():
        if f.is_file():
            assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, f


def test_newer_schema_is_refused_and_kept(corpus, db):
    index_paths([corpus], db, BM25)
    conn = sqlite3.connect(db / DB_FILE)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreIncompatible, match="newer"):
        index_paths([corpus], db, BM25)
    conn = sqlite3.connect(db / DB_FILE)
    assert conn.execute("SELECT count(*) FROM documents").fetchone()[0] >= 30


def test_other_chunking_needs_rebuild(corpus, db):
    from kb.index.chunker import ChunkConfig

    index_paths([corpus], db, BM25)
    other = IndexConfig(chunk=ChunkConfig(max_tokens=128), vector_index="none")
    with pytest.raises(StoreIncompatible, match="--rebuild"):
        index_paths([corpus], db, other)
    report = index_paths([corpus], db, IndexConfig(chunk=ChunkConfig(max_tokens=128), rebuild=True, vector_index="none"))
    assert report.added >= 30


def test_corrupt_bm25_cache_is_rebuilt(corpus, db):
    from conftest import damage

    index_paths([corpus], db, BM25)
    (db / "bm25.npz").write_bytes(b"not a zip")
    assert search(db, "sourdough")[0] == "cooking/sourdough-starter.md"
    damage(db / "bm25.npz")  # still a zip, a member failing its CRC: rebuilt too, by a query or a run
    assert search(db, "sourdough")[0] == "cooking/sourdough-starter.md"
    damage(db / "bm25.npz")
    index_paths([corpus], db, BM25)
    assert search(db, "sourdough")[0] == "cooking/sourdough-starter.md"


def test_path_glob_filters(corpus, db):
    index_paths([corpus], db, BM25)
    hits = search(db, "cache", path_glob="code/*")
    assert hits and all(h.startswith("code/") for h in hits)


def test_worker_processes_write_the_same_store_as_one_process(corpus, tmp_path):
    from dataclasses import replace

    def content(db):
        conn = sqlite3.connect(db / DB_FILE)
        try:
            return (conn.execute("SELECT d.path, c.seq, c.text, c.token_ids, c.n_terms FROM chunks c "
                                 "JOIN documents d ON d.id = c.doc_id ORDER BY c.id").fetchall(),
                    sorted(storeview.postings(conn)))
        finally:
            conn.close()

    one = index_paths([corpus], tmp_path / "one", replace(BM25, workers=1))
    two = index_paths([corpus], tmp_path / "two", replace(BM25, workers=2))  # >= 32 files: a pool reads
    assert one.to_json() | {"seconds": 0, "phases": {}} == two.to_json() | {"seconds": 0, "phases": {}}  # times differ
    assert content(tmp_path / "one") == content(tmp_path / "two")


def test_a_store_of_schema_2_is_migrated(corpus, tmp_path):
    """Schema 2 kept postings(term_id, chunk_id, tf) and embeddings WITHOUT ROWID; schema 3 keeps
    one postings blob per chunk, schema 4 the embeddings in a rowid table. Nothing is lost."""
    db = tmp_path / "db"
    index_paths([corpus], db, BM25)
    before = search(db, "Gutenberg printing press")
    conn = sqlite3.connect(db / DB_FILE)
    with conn:
        expected = sorted(storeview.postings(conn))
        term_ids = dict(conn.execute("SELECT term, id FROM terms"))
        conn.execute("CREATE TABLE postings (term_id INTEGER NOT NULL, chunk_id INTEGER NOT NULL, "
                     "tf INTEGER NOT NULL, PRIMARY KEY (term_id, chunk_id)) WITHOUT ROWID")
        conn.executemany("INSERT INTO postings VALUES (?, ?, ?)", [(term_ids[t], c, tf) for c, t, tf in expected])
        conn.execute("DROP TABLE chunk_terms")
        conn.execute("DROP TABLE embeddings")
        conn.execute("CREATE TABLE embeddings (model TEXT NOT NULL, hash TEXT NOT NULL, vector BLOB NOT NULL, "
                     "PRIMARY KEY (model, hash)) WITHOUT ROWID")
        conn.execute("INSERT INTO embeddings VALUES ('m', 'h', x'0000803f')")
        conn.execute("PRAGMA user_version=2")
    conn.close()
    (db / "bm25.npz").unlink()
    store = Store.open(db)
    try:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        assert sorted(storeview.postings(store.conn)) == expected
        assert not store.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'postings'").fetchone()
        assert store.conn.execute("SELECT model, hash, vector FROM embeddings").fetchall() == [
            ("m", "h", b"\x00\x00\x80\x3f")]
    finally:
        store.close()
    assert search(db, "Gutenberg printing press") == before


def test_damaged_kv_sources_do_not_stop_indexing(corpus, db):
    """`kb ask`'s record of which chunks each cached KV block came from is derived: damaged, it
    costs the KV cache (dropped, computed again), never a `kb index` run or an answer."""
    from kb.index.store.kv import record_sources

    index_paths([corpus], db, BM25)
    block = db / "kv" / "model-a" / "ab" / ("ab" + "0" * 62 + ".npz")
    block.parent.mkdir(parents=True)
    block.write_bytes(b"a cached block")
    (db / "kv" / "sources.db").write_bytes(b"not a database, and long enough to be read as one" * 100)
    report = index_paths([corpus], db, BM25)
    assert report.errors == [] and not (db / "kv").exists()
    (db / "kv").mkdir()
    (db / "kv" / "sources.db").write_bytes(b"not a database, and long enough to be read as one" * 100)
    record_sources(db / "kv" / "model-a", 4, [([1, 2, 3, 4, 5], [(0, 1)])])  # after an answer
    assert not (db / "kv").exists()


def test_each_phase_reports_its_time_and_counts(corpus, db):
    events = []
    report = index_paths([corpus], db, BM25, events=events.append)
    assert [e.phase for e in events] == ["plan", "read", "write", "derive"]  # BM25 only: no embed phase
    by = {e.phase: e for e in events}
    assert all(e.seconds >= 0 for e in events)
    assert by["plan"].counts["files"] == by["read"].counts["files"] == report.added
    assert by["write"].counts["chunks_added"] == report.chunks_added


def test_kv_sources_of_an_older_kb_are_migrated_and_pruned(corpus, db):
    """kv/sources.db files made before it had numbered migrations (user_version 0, the table
    there) open as they are, and the blocks of chunks that are gone are still pruned."""
    from kb.index.store import migrations

    index_paths([corpus], db, BM25)
    store = Store.open(db)
    live = store.conn.execute("SELECT min(id) FROM chunks").fetchone()[0]
    store.close()
    blocks = {cid: db / "kv" / "m" / "ab" / f"ab{cid:062d}.npz" for cid in (live, 10**9)}
    for path in blocks.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"a cached block")
    conn = sqlite3.connect(db / "kv" / "sources.db")
    conn.execute("CREATE TABLE block_chunks (fingerprint TEXT NOT NULL, digest TEXT NOT NULL, chunk_id INTEGER "
                 "NOT NULL, PRIMARY KEY (fingerprint, digest, chunk_id)) WITHOUT ROWID")
    conn.executemany("INSERT INTO block_chunks VALUES ('m', ?, ?)", [(p.stem, c) for c, p in blocks.items()])
    conn.commit()
    conn.close()
    index_paths([corpus], db, BM25)
    assert blocks[live].exists() and not blocks[10**9].exists()
    conn = sqlite3.connect(db / "kv" / "sources.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(migrations.KV_SOURCES)
    assert conn.execute("SELECT chunk_id FROM block_chunks").fetchall() == [(live,)]
    conn.close()


def test_kv_sources_of_a_newer_kb_are_left_alone(corpus, db):
    """A sources.db from a newer kb (a schema this kb does not know) costs neither a `kb index`
    run nor an answer: this kb neither prunes nor records there, and drops nothing."""
    from kb.index.store.kv import record_sources

    index_paths([corpus], db, BM25)
    block = db / "kv" / "m" / "ab" / ("ab" + "0" * 62 + ".npz")
    block.parent.mkdir(parents=True)
    block.write_bytes(b"a cached block")
    conn = sqlite3.connect(db / "kv" / "sources.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    (corpus / "tech" / "sqlite-wal.md").unlink()  # chunks go: a prune would look at the sources
    report = index_paths([corpus], db, BM25)
    assert report.errors == [] and report.removed == 1 and block.exists()
    record_sources(db / "kv" / "m", 4, [([1, 2, 3, 4, 5], [(0, 1)])])  # after an answer
    assert block.exists()
    conn = sqlite3.connect(db / "kv" / "sources.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 99
    conn.close()
