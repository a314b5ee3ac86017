"""Reranking on kb's generator: nDCG@10 of kb's hybrid search against hybrid + rerank with each
local model, in one run on the same corpus, and the rerank latency cold and with passages cached.

    python bench/rerank.py [--docs 2000] [--queries 50] [--depth 20] [--models smollm2-135m,qwen2.5-coder-0.5b]

Corpus and labelled queries as bench/retrieval.py: docstrings of installed packages, one file
each; --queries keyword queries (3 words of a document, 1 of another) and --queries summary
queries (a document's cut-out summary line). Each query's --depth best hybrid chunks are judged
once per model (cold: the passages' KV is computed); the blend weight is then chosen on one half of
the queries and scored on the other, and the other way round (what `kb eval --tune` would pick).
Warm latency: the same passages judged again for a different query text (their KV cached, the
query's tokens computed), as for a later query that retrieves them. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus as bench_corpus  # noqa: E402
from common import emit, machine  # noqa: E402
from retrieval import quality  # noqa: E402

WEIGHTS = [round(0.1 * i, 1) for i in range(11)]


def ranked_paths(hits, scores) -> list[str]:
    return [hits[i].path for i in sorted(range(len(hits)), key=lambda i: -scores[i])]


def judge_all(store, model: str, depth: int, hit_lists, queries) -> tuple[list[list[float]], dict]:
    from kb.rag.rerank import Reranker, RerankConfig

    rr = Reranker(store, RerankConfig(model=model, depth=depth))
    judged, cold, warm = [], [], []
    for i, (q, hits) in enumerate(zip(queries, hit_lists)):
        t0 = time.perf_counter()
        judged.append(rr.judge(q["text"], hits))
        cold.append(time.perf_counter() - t0)
        print(f"{model}: query {i + 1}/{len(queries)} judged in {cold[-1]:.1f} s", file=sys.stderr, flush=True)
    for q, hits in list(zip(queries, hit_lists))[:20]:
        t0 = time.perf_counter()
        rr.judge("find: " + q["text"], hits)
        warm.append(time.perf_counter() - t0)
        computed = rr.last["prompt_tokens"] - rr.last["cached_tokens"]
    return judged, {"cold_p50_s": statistics.median(cold), "warm_p50_s": statistics.median(warm),
                    "warm_computed_tokens_last": computed}


def tuned(hit_lists, judged, queries) -> tuple[dict, list[float]]:
    from kb.rag.rerank import blend

    def runs(idx, w):
        return [ranked_paths(hit_lists[i], blend([h.score for h in hit_lists[i]], judged[i], w)) for i in idx]
    folds = [list(range(0, len(queries), 2)), list(range(1, len(queries), 2))]
    out: list[list[str]] = [[] for _ in queries]
    chosen = []
    for tune, test in (folds, folds[::-1]):
        best = max(WEIGHTS, key=lambda w: quality(runs(tune, w), [queries[i] for i in tune])["ndcg@10_all"])
        chosen.append(best)
        for i, r in zip(test, runs(test, best)):
            out[i] = r
    per_weight = {w: quality(runs(range(len(queries)), w), queries)["ndcg@10_all"] for w in WEIGHTS}
    return {"tuned": quality(out, queries), "per_weight": per_weight}, chosen


def main() -> None:
    from kb.index.indexer import IndexConfig, index_paths
    from kb.index.search import Searcher
    from kb.index.store import Store

    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=50, help="of each kind")
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--models", default="smollm2-135m,qwen2.5-coder-0.5b")
    args = ap.parse_args()
    folder, summary = bench_corpus.build_held_out(args.docs, args.queries)
    keyword = [{**q, "type": "keyword"} for q in bench_corpus.known_item_queries(folder, args.queries, seed=1)]
    queries = keyword + summary
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(folder, Path(tmp) / "docs")
        index_paths([Path(tmp) / "docs"], Path(tmp) / "kb", IndexConfig())
        store = Store.open(Path(tmp) / "kb")
        searcher = Searcher(store)
        hit_lists = [searcher.search(q["text"], k=args.depth).results for q in queries]
        results = {"kb hybrid": quality([[h.path for h in hits] for hits in hit_lists], queries)}
        speed, weights = {}, {}
        for model in args.models.split(","):
            judged, speed[model] = judge_all(store, model, args.depth, hit_lists, queries)
            results[f"rerank alone ({model})"] = quality(
                [ranked_paths(h, j) for h, j in zip(hit_lists, judged)], queries)
            scored, weights[model] = tuned(hit_lists, judged, queries)
            results[f"hybrid + rerank ({model}), tuned"] = scored["tuned"]
            speed[model]["per_weight"] = scored["per_weight"]
        store.close()
    kinds = sorted({q["type"] for q in queries})
    print(f"\n{args.docs} documents, {len(queries)} queries, depth {args.depth}, {machine()}")
    print(f"{'system':50}" + "".join(f"{'nDCG@10 ' + k:>18}" for k in kinds + ["all"]))
    for name, r in results.items():
        print(f"{name:50}" + "".join(f"{r[f'ndcg@10_{k}']:18.4f}" for k in kinds + ["all"]))
    for model, s in speed.items():
        print(f"{model}: weights chosen {weights[model]}; judge {args.depth} passages: cold p50 "
              f"{s['cold_p50_s']:.2f} s, cached p50 {s['warm_p50_s']:.2f} s; nDCG@10 by weight "
              + " ".join(f"{w}:{v:.3f}" for w, v in s["per_weight"].items()))
    emit("rerank", docs=args.docs, queries=len(queries), depth=args.depth, machine=machine(),
         ndcg={n: r["ndcg@10_all"] for n, r in results.items()}, weights=weights,
         latency={m: {k: v for k, v in s.items() if k != "per_weight"} for m, s in speed.items()})


if __name__ == "__main__":
    main()
