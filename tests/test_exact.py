"""Exact things found exactly, through the real CLI in this process (tiny encoder): quoted phrases,
identifiers and file names in BM25, code symbols as headings, results spread over documents, and a
store analysed by an older kb read again rather than refused. Measured on real identifier queries
by bench/identifiers.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import SAMPLE
from inprocess import kb_run_json
from kb.index.search import exact
from kb.index.search.results import Hit


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_encoder):
    root = tmp_path_factory.mktemp("exact")
    corpus = Path(shutil.copytree(SAMPLE, root / "corpus"))
    (corpus / "docs").mkdir()
    (corpus / "docs" / "CMAKE_BUILD_TYPE.rst").write_text(
        "CMAKE_BUILD_TYPE\n----------------\n\nSpecifies the build type on single-configuration generators.\n")
    (corpus / "docs" / "languages.md").write_text(
        "# Languages\n\nThe C++ standard is chosen per target. Plain C is older.\n")
    (corpus / "docs" / "mentions.md").write_text(
        "# Build notes\n\nThe build type matters; see the cmake manual for the type of build.\n")
    (corpus / "code").mkdir(exist_ok=True)
    (corpus / "code" / "shapes.py").write_text(
        '"""Shapes."""\n\nimport math\n\n' + "".join(f"UNIT_{i} = {i}  # a constant of the module\n" for i in range(20))
        + "\n\nclass Circle:\n    def area(self):\n        return math.pi * self.r ** 2\n\n"
        "    def perimeter(self):\n        return 2 * math.pi * self.r\n" + "        # more\n" * 40)
    kb_run_json("index", corpus, "--db", root / "store", "--model", tiny_encoder)
    return corpus, root / "store"


def paths(store, query, *args):
    return [h["path"] for h in kb_run_json("query", query, "--db", store, "-k", "3", *args)["results"]]


@pytest.mark.parametrize("mode", ["bm25", "hybrid"])
def test_an_identifier_finds_the_page_named_for_it(store, mode):
    _, db = store
    assert paths(db, "CMAKE_BUILD_TYPE", "--mode", mode)[0] == "docs/CMAKE_BUILD_TYPE.rst"
    assert paths(db, "C++ standard", "--mode", mode)[0] == "docs/languages.md"


def test_a_code_symbol_is_the_heading_of_its_chunk(store):
    _, db = store
    hit = kb_run_json("query", "Circle.perimeter", "--db", db, "--mode", "bm25")["results"][0]
    assert hit["path"] == "code/shapes.py" and hit["heading"].startswith("Circle")


def test_a_quoted_phrase_must_appear_as_written(store):
    _, db = store
    found = kb_run_json("query", '"write-ahead log"', "--db", db, "--mode", "bm25")["results"]
    assert found and all("write-ahead log" in h["text"].lower() for h in found)
    assert kb_run_json("query", '"log write-ahead"', "--db", db, "--mode", "bm25")["results"] == []


def hit(path, score):
    return Hit(0, score, path, 1, 2, "", "text", "/r", 0)


def test_a_documents_later_chunks_make_room_for_other_documents():
    hits = [hit("a", 1.0), hit("a", 0.9), hit("a", 0.85), hit("b", 0.8), hit("c", 0.3)]
    ranked = exact.spread(hits, 4)
    assert [h.path for h in ranked] == ["a", "b", "a", "a"] and [h.rank for h in ranked] == [1, 2, 3, 4]
    assert ranked[0].score == 1.0 and ranked[2].score == pytest.approx(0.72)
    far = exact.spread([hit("a", 1.0), hit("a", 0.99), hit("b", 0.2)], 3)
    assert [h.path for h in far] == ["a", "a", "b"]  # a chunk far ahead keeps its place


def test_phrases_are_read_from_straight_and_curly_quotes():
    assert exact.phrases('sqlite "Write-Ahead  Log" and \u201ccheckpoint\u201d') == ["write-ahead log", "checkpoint"]
    assert exact.phrases('no phrase, one " stray quote') == []


def test_a_store_analysed_by_an_older_kb_is_read_again_not_refused(tmp_path, tiny_encoder):
    import json

    from kb.index.store import Store

    corpus = Path(shutil.copytree(SAMPLE / "tech", tmp_path / "corpus"))
    db = tmp_path / "store"
    first = kb_run_json("index", corpus, "--db", db, "--model", tiny_encoder)
    store = Store.open(db)
    fp = json.loads(store.meta("fingerprint"))
    with store.transaction(data=False):
        store.set_meta("fingerprint", json.dumps({**fp, "analyzer": "older"}))
    store.close()
    again = kb_run_json("index", corpus, "--db", db, "--model", tiny_encoder)
    assert again["updated"] == first["added"] and again["embedded"] == 0  # read again, vectors kept
    assert kb_run_json("index", corpus, "--db", db, "--model", tiny_encoder)["unchanged"] == first["added"]
