"""Reranking on kb's generator with the real SmolLM2-135M-Instruct (fp32, CPU): judgements equal
Hugging Face's logits on the same token ids, the hits reordered by the blend, a passage's KV
computed once and reused by a later query (in the same process and from a new one), and bad
combinations refused. Quality and latency are measured by bench/rerank.py (docs/performance.md)."""

from __future__ import annotations

import shutil

import pytest

from conftest import SAMPLE, kb, kb_json

pytestmark = pytest.mark.slow  # the real SmolLM2 and MiniLM

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    root = tmp_path_factory.mktemp("rerank")
    shutil.copytree(SAMPLE, root / "corpus")
    kb("index", root / "corpus", "--db", root / "store", "--quiet")
    return root / "store"


def test_judgements_are_the_models_log_odds_and_order_the_hits(db, smollm2):
    from transformers import AutoModelForCausalLM

    from kb.index.search import Searcher
    from kb.index.store import Store
    from kb.rag.rerank import Reranker, RerankConfig, blend

    store = Store.open(db)
    result = Searcher(store).search("how often should I water a bonsai", k=6)
    rr = Reranker(store, RerankConfig(model=str(smollm2), depth=6, weight=0.5))
    judged = rr.judge(result.query, result.results)
    hf = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    for hit, got in zip(result.results, judged):
        ids = rr.prompt(result.query, hit)
        assert len(ids) > 0
        with torch.inference_mode():
            lp = hf(torch.tensor([ids])).logits[0, -1].float().log_softmax(-1)
        yes, no = torch.logsumexp(lp[list(rr._yes)], 0), torch.logsumexp(lp[list(rr._no)], 0)
        assert got == pytest.approx(float(yes - no), abs=2e-3)
    reranked = rr.rerank(result, 3)
    scores = blend([h.score for h in result.results], judged, 0.5)
    best = sorted(range(6), key=lambda i: -scores[i])[:3]
    assert [h.chunk_id for h in reranked.results] == [result.results[i].chunk_id for i in best]
    assert [h.rank for h in reranked.results] == [1, 2, 3]
    assert reranked.rerank["model"] == smollm2.name and "rerank" in reranked.timings_ms


def test_a_later_query_over_the_same_passages_computes_only_its_own_tokens(db, smollm2):
    from kb.index.search import Searcher
    from kb.index.store import Store
    from kb.rag.rerank import Reranker, RerankConfig

    store = Store.open(db)
    hits = Searcher(store).search("sqlite write-ahead log", k=5, path_glob="tech/*").results
    rr = Reranker(store, RerankConfig(model=str(smollm2)))
    rr.judge("sqlite write-ahead log", hits)
    query = "when does a checkpoint run"
    rr.judge(query, hits)
    own = len(rr.suffix(query))
    assert rr.last["prompt_tokens"] - rr.last["cached_tokens"] <= len(hits) * own
    assert rr.last["cached_tokens"] >= sum(len(rr.prompt(query, h)) - own for h in hits)  # every passage's prefix


def test_a_new_process_reads_the_passages_back_from_disk(db, smollm2):
    args = ("--db", db, "--rerank", "--rerank-model", smollm2, "--path", "garden/*", "-k", "3", "--rerank-depth", "50")
    first = kb_json("query", "when should tomatoes be watered", *args)
    second = kb_json("query", "what kills tomato leaves", *args)
    for out in (first, second):
        assert out["rerank"]["model"] == smollm2.name and len(out["results"]) == 3
        assert [h["rank"] for h in out["results"]] == [1, 2, 3]
    n = second["rerank"]["depth"]
    assert n == first["rerank"]["depth"] >= 2  # the same garden chunks, judged in both processes
    computed = second["rerank"]["prompt_tokens"] - second["rerank"]["cached_tokens"]
    assert computed <= n * 20  # per passage only the query and the turn's end (~12 tokens) are new
    assert second["rerank"]["cached_tokens"] >= 0.8 * second["rerank"]["prompt_tokens"]


def test_rerank_needs_hybrid_and_an_installed_model(db, tmp_path):
    p = kb("query", "bonsai", "--db", db, "--rerank", "--mode", "bm25", check=2)
    assert "--mode hybrid" in p.stderr and "Traceback" not in p.stderr
    p = kb("query", "bonsai", "--db", db, "--rerank", check=3, env={"KB_MODELS": str(tmp_path / "none")})
    assert "kb models install" in p.stderr and "Traceback" not in p.stderr
    plain = kb_json("query", "bonsai", "--db", db, "--no-rerank")
    assert "rerank" not in plain
