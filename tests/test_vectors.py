"""Embeddings and vector indexes with the real all-MiniLM-L6-v2 and real hnswlib/faiss."""

import json
import shutil
import sqlite3

import numpy as np
import pytest

from conftest import damage, kb
from kb.embed import load_encoder
from kb.embed.encoder import EmbedConfig
from kb.embed.tokenizer import default_model_dir, load_tokenizer
from kb.index import vectors
from kb.index.indexer import IndexConfig, index_paths
from kb.index.search import Searcher
from kb.index.store import Store

pytestmark = pytest.mark.slow  # the real MiniLM, sentence-transformers, hnswlib and faiss


def test_embeddings_match_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    texts = ["How do I squash commits?", "Sourdough starter fed with rye flour.", "短", "x " * 300]
    tok = load_tokenizer()
    mine = load_encoder(EmbedConfig()).embed_passages([tok.encode(t).ids for t in texts])
    ref = SentenceTransformer(str(default_model_dir()), device="cpu").encode(texts, normalize_embeddings=True)
    assert (mine * ref).sum(1).min() >= 0.9999


def test_only_new_texts_are_embedded(corpus, db):
    first = index_paths([corpus], db)
    assert first.embedded == first.chunks_added > 0
    assert index_paths([corpus], db).embedded == 0
    doc = corpus / "tech" / "sqlite-wal.md"
    doc.write_text(doc.read_text() + "\n## Backups\n\nUse VACUUM INTO for a copy.\n")
    report = index_paths([corpus], db)
    assert report.embedded == report.chunks_added == 1


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_deleted_documents_leave_the_vector_index(corpus, db, kind, monkeypatch):
    from kb.index.vectors import ivf

    monkeypatch.setattr(ivf, "MIN_TRAIN", 10)  # train IVF even on the small sample corpus
    assert index_paths([corpus], db, IndexConfig(vector_index=kind)).vector_index == kind
    (corpus / "history" / "printing-press.md").unlink()
    index_paths([corpus], db, IndexConfig(vector_index=kind))
    store = Store.open(db)
    tag, index = vectors.current(store, json.loads(store.meta("embedding"))["key"], 384, kind)
    chunk_ids = [r[0] for r in store.conn.execute("SELECT id FROM chunks ORDER BY id")]
    assert tag.kind == kind and index.ids().tolist() == chunk_ids
    hits = Searcher(store).search("Gutenberg printing press Mainz", k=10, mode="vector").results
    assert hits and all(h.path != "history/printing-press.md" for h in hits)


@pytest.mark.parametrize("known_bytes", [0, 40_000, 512 << 20])
def test_vector_index_holds_the_stored_vectors(corpus, db, known_bytes):
    """Built from what the run wrote (all of it, part, none) and caught up after an edit: the
    index's vectors are the store's, bit for bit, chunk by chunk."""
    from kb.index.store import embeddings

    def check():
        store = Store.open(db)
        try:
            key = json.loads(store.meta("embedding"))["key"]
            _, ids, vecs = embeddings.matrix(store, key, 384)
            index = vectors.load(store)[1]
            assert index.ids().tolist() == ids.tolist() and np.array_equal(index.state()["vecs"], vecs)
        finally:
            store.close()

    cfg = IndexConfig(vector_index="flat", embed_batch=16, known_bytes=known_bytes)  # 40 KB: the first 16
    index_paths([corpus], db, cfg)
    check()
    doc = corpus / "tech" / "sqlite-wal.md"
    doc.write_text(doc.read_text() + "\n## Backups\n\nUse VACUUM INTO for a copy.\n")
    (corpus / "history" / "printing-press.md").unlink()
    assert index_paths([corpus], db, cfg).embedded == 1
    check()


def test_stale_or_corrupt_vector_file_is_caught_up(corpus, db):
    index_paths([corpus], db)
    old = db / "old-vectors.npz"
    shutil.copy(db / vectors.FILE, old)
    (corpus / "notes" / "zebra.md").write_text("# Zebras\n\nStriped horses of the African savanna.\n")
    index_paths([corpus], db)
    shutil.copy(old, db / vectors.FILE)  # as if killed before the vector index was written
    store = Store.open(db)
    hit = Searcher(store).search("striped African horses", k=1, mode="vector").results[0]
    assert hit.path == "notes/zebra.md"
    (db / vectors.FILE).write_bytes(b"garbage")
    assert Searcher(store).search("striped African horses", k=1, mode="vector").results[0].path == "notes/zebra.md"
    damage(db / vectors.FILE)  # a zip whose member fails its CRC
    assert vectors.peek(store) is None
    assert Searcher(store).search("striped African horses", k=1, mode="vector").results[0].path == "notes/zebra.md"
    damage(db / vectors.FILE)
    index_paths([corpus], db)  # what cron runs next: the index is rebuilt, not an internal error
    assert vectors.peek(store)["count"] > 0


def test_model_mismatch_is_a_one_line_error(corpus, db):
    kb("index", corpus / "tech", "--db", db, "--quiet")
    conn = sqlite3.connect(db / "kb.sqlite")
    meta = json.loads(conn.execute("SELECT value FROM meta WHERE key = 'embedding'").fetchone()[0])
    meta["key"] = "0" * 16
    conn.execute("UPDATE meta SET value = ? WHERE key = 'embedding'", (json.dumps(meta),))
    conn.commit()
    proc = kb("query", "rebase", "--db", db, "--mode", "vector", check=4)
    assert "kb index --rebuild" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_a_rebuild_embeds_once(corpus, db):
    """A rebuild embeds inside its one transaction, and not a second time after it."""
    labels, events = [], []

    class Labels:
        def start(self, total, label="indexing"):
            labels.append(label)

        def advance(self, path, tokens=0):
            pass

        def finish(self):
            pass

    index_paths([corpus], db, IndexConfig(vector_index="none"))
    report = index_paths([corpus], db, IndexConfig(vector_index="flat", rebuild=True), Labels(), events.append)
    assert labels == ["indexing", "embedding"]
    assert [e.phase for e in events] == ["plan", "read", "write", "feed", "embed", "derive"]
    assert report.embedded == {e.phase: e for e in events}["embed"].counts["texts"] > 0
