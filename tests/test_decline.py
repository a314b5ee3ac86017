"""Whether `kb ask` declines, decided from the search alone (kb.rag.sources.relevant, no generator), on
real stores built with `kb index` and the bundled MiniLM encoder: a one- and a three-document
store answer their questions and decline the rest, as sample_corpus does; and the generic
background that small stores are read against (kb.index.background), with a fake encoder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, SAMPLE, kb
from kb.index import background
from kb.index.search import Searcher
from kb.index.store import Store
from kb.rag.sources import relevant

TINY = REPO / "tests" / "data" / "tiny"


def _questions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


TINY_QUESTIONS = _questions(REPO / "tests" / "data" / "tiny_questions.jsonl")
BENCH_QUESTIONS = _questions(REPO / "bench" / "ask_questions.jsonl")


def _searcher(tmp_path_factory, name: str, files: list[Path]) -> Searcher:
    root = tmp_path_factory.mktemp(name)
    (root / "docs").mkdir()
    for f in files:
        shutil.copy(f, root / "docs")
    kb("index", root / "docs", "--db", root / "store", "--quiet")
    return Searcher(Store.open(root / "store"))


def _verdicts(searcher: Searcher, questions: list[dict], docs: set[str]) -> dict[str, tuple[bool, bool]]:
    """question -> (its document is in the store, kb would ask the model)."""
    return {q["question"]: (q["doc"] in docs, relevant(searcher.search(q["question"], k=6).results))
            for q in questions}


def _assert_decides(verdicts: dict[str, tuple[bool, bool]]) -> None:
    wrong = {q: v for q, v in verdicts.items() if v[0] != v[1]}
    assert not wrong, wrong  # (answerable, answered) for each wrong decision


@pytest.mark.slow
@pytest.mark.parametrize("names", [["ferry.md"], ["ferry.md", "orchard.md", "lighthouse.md"]])
def test_a_tiny_store_answers_its_questions_and_declines_the_rest(tmp_path_factory, names):
    searcher = _searcher(tmp_path_factory, f"tiny{len(names)}", [TINY / n for n in names])
    off_topic = [q for q in BENCH_QUESTIONS if q["expect"] is None]
    _assert_decides(_verdicts(searcher, TINY_QUESTIONS + off_topic, set(names)))


@pytest.mark.slow
def test_sample_corpus_answers_its_questions_and_declines_the_rest(tmp_path_factory):
    searcher = _searcher(tmp_path_factory, "sample", [])
    kb("index", SAMPLE, "--db", searcher.store.dir, "--quiet")
    docs = {str(p.relative_to(SAMPLE)) for p in SAMPLE.rglob("*") if p.is_file()}
    _assert_decides(_verdicts(searcher, BENCH_QUESTIONS + TINY_QUESTIONS, docs))


class FakeEncoder:
    key, dims = "fake", 4

    class tokenizer:  # noqa: N801
        @staticmethod
        def encode(text):
            return type("Ids", (), {"ids": [len(text)]})

    def __init__(self):
        self.calls = 0

    def embed_passages(self, id_lists):
        self.calls += 1
        rng = np.random.default_rng(0)
        v = rng.normal(size=(len(id_lists), self.dims)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_passages_are_embedded_once_and_cached_under_the_store(tmp_path):
    enc = FakeEncoder()
    first = background.vectors(enc, tmp_path)
    assert first.shape == (len(background.PASSAGES), 4) and enc.calls == 1
    assert np.array_equal(background.vectors(enc, tmp_path), first) and enc.calls == 1
    enc.key = "another"  # vectors of another encoder are never used
    background.vectors(enc, tmp_path)
    assert enc.calls == 2
    (tmp_path / "background.npz").write_bytes(b"torn")
    assert np.array_equal(background.vectors(enc, tmp_path), first) and enc.calls == 3


def test_passages_make_up_what_the_store_lacks_of_the_sample():
    q = np.array([1.0, 0, 0, 0], np.float32)
    passages = np.array([[0.0, 1, 0, 0], [0.2, 0.98, 0, 0]], np.float32)  # similarities 0 and 0.2
    near = np.array([[0.9, 0.436, 0, 0]], np.float32)  # a store of one chunk, similarity 0.9
    mean, _ = background.Background(near, passages).stats(q)
    assert mean == pytest.approx((0.9 + 255 * 0.1) / 256)
    full = np.repeat(near, background.SAMPLE, axis=0)
    assert background.Background(full, passages).stats(q) == pytest.approx((0.9, 0.0), abs=1e-6)
    assert background.Background(near[:0], passages).stats(q) == pytest.approx((0.1, 0.1))
