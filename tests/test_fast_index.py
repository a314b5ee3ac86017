"""The index and search layers with vectors, through the library, in the fast tier: the tiny encoder
(tests/tiny.py) embeds, so a run's embedding bookkeeping (what is embedded again, what leaves the
vector index) is checked in milliseconds. BM25-only indexing is tested in test_index.py."""

from __future__ import annotations

import numpy as np
import pytest

from kb.embed.encoder import EmbedConfig
from kb.index.indexer import IndexConfig, index_paths
from kb.index.search import Searcher
from kb.index.store import Store


@pytest.fixture
def cfg(tiny_encoder) -> IndexConfig:
    # One reader, in this process: worker processes are tested with the real model (test_index.py).
    return IndexConfig(embed=EmbedConfig(model=str(tiny_encoder)), workers=1)


def every_vector_hit(db) -> list[tuple[str, float]]:
    """(path, score) of every chunk, by vector search alone."""
    store = Store.open(db)
    try:
        return [(h.path, h.score) for h in Searcher(store).search("keeper of the lighthouse", k=10_000,
                                                                  mode="vector").results]
    finally:
        store.close()


def chunk_count(db) -> int:
    store = Store.open(db)
    try:
        return store.conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
    finally:
        store.close()


def test_every_chunk_is_embedded_once(corpus, db, cfg):
    first = index_paths([corpus], db, cfg)
    assert first.embedded == first.chunks_added == chunk_count(db) and first.vector_index == "flat"
    assert len(every_vector_hit(db)) == first.chunks_added
    second = index_paths([corpus], db, cfg)
    assert (second.embedded, second.chunks_added, second.unchanged) == (0, 0, first.added)


def test_an_edit_embeds_only_the_new_chunk(corpus, db, cfg):
    index_paths([corpus], db, cfg)
    doc = corpus / "tech" / "sqlite-wal.md"
    doc.write_text(doc.read_text() + "\n## Backups\n\nUse the online backup API or VACUUM INTO for a copy.\n")
    report = index_paths([corpus], db, cfg)
    assert (report.added, report.updated, report.removed) == (0, 1, 0)
    assert report.chunks_added == report.embedded == 1 and report.chunks_removed == 0
    assert len(every_vector_hit(db)) == chunk_count(db)


def test_a_deleted_file_leaves_the_vector_index(corpus, db, cfg):
    index_paths([corpus], db, cfg)
    assert "history/printing-press.md" in {p for p, _ in every_vector_hit(db)}
    (corpus / "history" / "printing-press.md").unlink()
    report = index_paths([corpus], db, cfg)
    assert report.removed == 1 and report.chunks_removed >= 1 and report.embedded == 0
    hits = every_vector_hit(db)
    assert "history/printing-press.md" not in {p for p, _ in hits} and len(hits) == chunk_count(db)


def test_the_same_files_give_the_same_vectors(corpus, tmp_path, cfg):
    index_paths([corpus / "tech"], tmp_path / "one", cfg)
    index_paths([corpus / "tech"], tmp_path / "two", cfg)
    one, two = every_vector_hit(tmp_path / "one"), every_vector_hit(tmp_path / "two")
    assert [p for p, _ in one] == [p for p, _ in two]
    np.testing.assert_array_equal([s for _, s in one], [s for _, s in two])
