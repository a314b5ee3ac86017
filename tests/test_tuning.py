"""The BM25 title field's weight and the fusion per store and per query language, as `kb eval
--tune --apply` chooses and stores them."""

from __future__ import annotations

import json

import numpy as np

from conftest import SAMPLE, kb
from kb.embed.encoder import EmbedConfig
from kb.index.bm25 import CACHE_FILE, TITLE_WEIGHT, Bm25Cache
from kb.index.indexer import IndexConfig, index_paths
from kb.index.search import Searcher, fusion
from kb.index.search.evaluate import FUSION_WEIGHTS, TITLE_WEIGHTS, chosen, evaluate_store
from kb.index.search.language import guess
from kb.index.store import Store


def test_the_title_weight_is_applied_when_the_cache_is_built(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "zephyr.md").write_text("Nothing about the wind in this text at all.\n")
    (tmp_path / "docs" / "notes.md").write_text("The zephyr is a light west wind, as the poets say.\n")
    index_paths([tmp_path / "docs"], tmp_path / "store", IndexConfig(vector_index="none"))
    store = Store.open(tmp_path / "store")
    try:
        searcher = Searcher(store)
        assert [h.path for h in searcher.search("zephyr", mode="bm25").results] == ["zephyr.md", "notes.md"]
        searcher.bm25.weigh_title(0.0)  # the file name no longer counts
        assert [h.path for h in searcher.search("zephyr", mode="bm25").results] == ["notes.md"]
        searcher.bm25.weigh_title(None)
        assert Bm25Cache.current(store).title_weight == TITLE_WEIGHT
    finally:
        store.close()


def test_languages_are_told_apart_by_function_words():
    assert guess("lister le contenu d'un répertoire") == "fr"
    assert guess("zeigt den Inhalt des Verzeichnisses an") == "de"
    assert guess("listar el contenido de los directorios") == "es"
    assert guess("how do I make sqlite checkpoint its log") == "en"
    assert guess("sqlite wal checkpoint") == ""  # keywords: the store's weights


def test_a_language_gets_its_own_fusion_only_where_it_does_better():
    def trial(title, method, weight, ndcg, fr, de):
        return {"title_weight": title, "method": method, "weight": weight, "ndcg@10": ndcg,
                "by_language": {"fr": fr, "de": de}}

    trials = [trial(1.0, "calibrated", 0.5, 0.70, 0.60, 0.80), trial(1.0, "rrf", 0.3, 0.69, 0.65, 0.70),
              trial(4.0, "rrf", 0.2, 0.68, 0.90, 0.90)]  # a better fr score under another title weight
    assert chosen(trials) == {"title_weight": 1.0, "method": "calibrated", "weight": 0.5,
                              "languages": {"fr": {"method": "rrf", "weight": 0.3}}}


def test_tune_apply_stores_title_weight_and_fusion_that_queries_then_use(tmp_path, tiny_encoder):
    db = tmp_path / "store"
    index_paths([SAMPLE], db, IndexConfig(embed=EmbedConfig(model=str(tiny_encoder)), vector_index="flat"))
    report = evaluate_store(db, SAMPLE / "eval" / "queries.jsonl", SAMPLE / "eval" / "qrels.tsv",
                            tune=True, apply=True)
    assert len(report["tuning"]) == len(TITLE_WEIGHTS) * len(fusion.METHODS) * len(FUSION_WEIGHTS)
    best = report["tuning"][0]
    assert report["fusion"] == report["chosen"]
    assert {k: best[k] for k in ("title_weight", "method", "weight")} == \
        {k: report["chosen"][k] for k in ("title_weight", "method", "weight")}
    assert best["ndcg@10"] == max(t["ndcg@10"] for t in report["tuning"])
    store = Store.open(db)
    try:
        assert fusion.settings(store) == report["chosen"]
        Searcher(store).search("sourdough starter", mode="bm25")  # rebuilds the cache under the new weight
        with np.load(store.path(CACHE_FILE)) as f:
            assert json.loads(str(f["tag"]))["title"] == report["chosen"]["title_weight"]
        fusion.save(store, "rrf", 0.3, {"fr": {"method": "weighted", "weight": 0.7}})
        assert fusion.configured(store, "le levain et la farine") == ("weighted", 0.7)
        assert fusion.configured(store, "sourdough starter") == ("rrf", 0.3)
    finally:
        store.close()
    status = json.loads(kb("status", "--db", db, "--json").stdout)["vectors"]["fusion"]
    assert status["languages"] == {"fr": {"method": "weighted", "weight": 0.7}}
    assert kb("check", "--db", db).returncode == 0
