"""Retrieval quality and speed: kb's three modes against bm25s, sentence-transformers exact search
and plain reciprocal rank fusion, in one process on the same corpus.

    python bench/retrieval.py [--docs 12000] [--queries 500] [--set pydocs|man-en|man-fr+de+es]
                              [--model NAME|DIR] [--no-st]

Corpus (pydocs): docstrings of the standard library and installed packages, one file each
(bench/corpus.py). The man-* sets are Debian's manual pages (bench/manpages.py: 11,294 English
pages; 3,141 French, German and Spanish ones) with their NAME line's summary as the query.
Labelled queries, two kinds, --queries of each (no labelled set installs offline, so they are made):
- keyword: 3 words of a document and 1 of another (known-item search, what BM25 is built for);
- summary: a document's one-line summary, cut out of the indexed file (the inverse cloze task: a
  description of what the rest of the text explains, mostly in other words).
Each query has one relevant document; chunk results are collapsed to documents.

Systems: kb bm25, vector and hybrid (its default fusion); kb hybrid with the title weight and fusion
`kb eval --tune` picks for this store, per query language where that pays (chosen on one half of
the queries, scored on the other); plain RRF (k=60)
over kb's very same BM25 and vector candidates; bm25s on whole documents; sentence-transformers
`encode` with the same model (all-MiniLM-L6-v2) of kb's own chunk texts and exact cosine search
(chunks collapsed to documents, as for kb). Whole documents would be cut at 256 word pieces.
Speed: hybrid latency of a warm process (k=10, query embedding included); indexing throughput of
`kb index` from files to stored vectors (reading, chunking, BM25, embedding, vector index) against
sentence-transformers `encode` alone of the same chunk texts, so both embed the same tokens.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus as bench_corpus  # noqa: E402
from common import emit  # noqa: E402

from kb.index.search.evaluate import ndcg_at, recall_at  # noqa: E402

DEPTH = 30  # chunks retrieved per query, collapsed to documents for @10 metrics


def quality(runs: list[list[str]], queries: list[dict]) -> dict:
    out = {}
    for kind in sorted({q["type"] for q in queries}) + ["all"]:
        rows = [(r, q) for r, q in zip(runs, queries) if kind in ("all", q["type"])]
        docs = [(list(dict.fromkeys(r)), {q["doc"]: 1}) for r, q in rows]
        out[f"ndcg@10_{kind}"] = round(float(np.mean([ndcg_at(d, rel) for d, rel in docs])), 4)
        if kind == "all":
            out["recall@10"] = round(float(np.mean([recall_at(d, rel, 10) for d, rel in docs])), 4)
    return out


def run_kb(folder: Path, queries: list[dict], work: Path, model: str | None = None) -> tuple[dict, dict]:
    from kb.embed.encoder import EmbedConfig
    from kb.index.indexer import IndexConfig, index_paths
    from kb.rag.catalog import encoder_folder
    from kb.index.search import Searcher
    from kb.index.store import Store

    docs = work / "docs"
    shutil.copytree(folder, docs, dirs_exist_ok=True)
    t0 = time.perf_counter()
    report = index_paths([docs], work / "kb", IndexConfig(embed=EmbedConfig(model=encoder_folder(model))))
    index_s = time.perf_counter() - t0
    store = Store.open(work / "kb")
    tokens = store.conn.execute("SELECT sum(length(token_ids) / 4 + 2) FROM chunks").fetchone()[0]
    chunks = [(os.path.relpath(p, r), t) for p, r, t in store.conn.execute(
        "SELECT d.path, d.root, c.text FROM chunks c JOIN documents d ON d.id = c.doc_id ORDER BY c.id")]
    searcher = Searcher(store)
    searcher.search("warm up", k=10, mode="hybrid")  # loads torch, the model and the indexes

    results = {}
    for mode in ("bm25", "vector", "hybrid"):
        runs = [[h.path for h in searcher.search(q["text"], k=DEPTH, mode=mode).results] for q in queries]
        results[f"kb {mode}"] = quality(runs, queries)
    lists = [searcher.candidates(q["text"], 100) for q in queries]
    runs = [searcher.fuse_paths(bm, vec, DEPTH, "rrf", 0.5) for bm, vec in lists]
    results["plain RRF (kb's lists)"] = quality(runs, queries)
    runs = [searcher.fuse_paths(bm, vec, DEPTH, "weighted", 0.5) for bm, vec in lists]
    results["plain min-max (kb's lists)"] = quality(runs, queries)
    results["kb hybrid, tuned (2-fold)"], chosen = cross_tuned(searcher, queries)

    times = []
    for q in queries:
        t0 = time.perf_counter()
        searcher.search(q["text"], k=10, mode="hybrid")
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    speed = {"kb_index_s": index_s, "kb_docs": report.added, "kb_chunks": report.chunks_added,
             "kb_tokens": tokens, "kb_vector_index": report.vector_index,
             "hybrid_p50_ms": statistics.median(times), "hybrid_p95_ms": times[int(0.95 * len(times))],
             "fusion": "%s %.1f" % searcher.fusion(), "tuned_fusion": chosen}
    store.close()
    return results, speed, chunks


def cross_tuned(searcher, queries: list[dict]) -> tuple[dict, list[str]]:
    """What `kb eval --tune --apply` gives: the title weight and fusion (per query language where
    that pays) chosen on one half of the queries, scored on the other half, and the other way round."""
    from kb.index.search.evaluate import Query, chosen, tune_fusion
    from kb.index.search.language import guess

    labelled = [Query(str(i), q["text"], q["type"]) for i, q in enumerate(queries)]
    qrels = {str(i): {q["doc"]: 1} for i, q in enumerate(queries)}
    folds = [list(range(0, len(queries), 2)), list(range(1, len(queries), 2))]
    runs: list[list[str]] = [[] for _ in queries]
    picks = []
    for tune, test in (folds, folds[::-1]):
        best = chosen(tune_fusion(searcher, [labelled[i] for i in tune], qrels, depth=100))
        picks.append("title %g, %s %.1f%s" % (best["title_weight"], best["method"], best["weight"], "".join(
            f", {lang} {g['method']} {g['weight']:.1f}" for lang, g in sorted(best.get("languages", {}).items()))))
        searcher.bm25.weigh_title(best["title_weight"])
        for i in test:
            fusion = best.get("languages", {}).get(guess(queries[i]["text"]), best)
            runs[i] = searcher.fuse_paths(*searcher.candidates(queries[i]["text"], 100), DEPTH,
                                          fusion["method"], fusion["weight"])
        searcher.bm25.weigh_title(None)
    return quality(runs, queries), picks


def run_bm25s(paths: list[str], texts: list[str], queries: list[dict]) -> dict:
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
    retriever.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False),
                    show_progress=False)
    runs = []
    for q in queries:
        tokens = bm25s.tokenize([q["text"]], stopwords="en", stemmer=stemmer, show_progress=False)
        idx = retriever.retrieve(tokens, k=10, show_progress=False)[0][0] if tokens.vocab else []
        runs.append([paths[i] for i in idx])
    return quality(runs, queries)


def run_st(chunks: list[tuple[str, str]], queries: list[dict]) -> tuple[dict, dict]:
    from sentence_transformers import SentenceTransformer

    from kb.embed.tokenizer import default_model_dir

    model = SentenceTransformer(str(default_model_dir()), device="cpu")
    paths, texts = [p for p, _ in chunks], [t for _, t in chunks]
    model.encode(texts[:64])  # warm
    t0 = time.perf_counter()
    doc_vecs = model.encode(texts, normalize_embeddings=True)
    encode_s = time.perf_counter() - t0
    tokens = sum(min(len(ids), model.max_seq_length) for ids in model.tokenizer(texts)["input_ids"])
    q_vecs = model.encode([q["text"] for q in queries], normalize_embeddings=True)
    scores = q_vecs @ doc_vecs.T
    top = np.argsort(-scores, axis=1)[:, :DEPTH]
    return quality([[paths[i] for i in row] for row in top], queries), {"st_encode_s": encode_s,
                                                                        "st_tokens": tokens}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=12_000)
    ap.add_argument("--queries", type=int, default=500, help="of each kind")
    ap.add_argument("--set", default="pydocs", help="pydocs | man-en | man-fr+de+es | man-fr ...")
    ap.add_argument("--model", default=None, help="the encoder: an installed name or a folder (default MiniLM)")
    ap.add_argument("--store", default="", help="keep kb's copy and store here (reused by a later run)")
    ap.add_argument("--no-st", action="store_true", help="skip sentence-transformers (it embeds everything again)")
    args = ap.parse_args()
    if args.set == "pydocs":
        folder, summary = bench_corpus.build_held_out(args.docs, args.queries)
        keyword = [{**q, "type": "keyword"} for q in bench_corpus.known_item_queries(folder, args.queries, seed=1)]
        queries = keyword + summary
    else:
        import manpages

        folder, queries = manpages.build(args.set.removeprefix("man-"))
        queries = queries[:args.queries]
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    paths = [f.relative_to(folder).as_posix() for f in files]
    texts = [f.read_text() for f in files]
    if args.store:  # kept: a later run with the same --store embeds nothing again
        Path(args.store).mkdir(parents=True, exist_ok=True)
        results, speed, chunks = run_kb(folder, queries, Path(args.store), args.model)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            results, speed, chunks = run_kb(folder, queries, Path(tmp), args.model)
    results["bm25s"] = run_bm25s(paths, texts, queries)
    st_speed = {"st_encode_s": float("nan"), "st_tokens": 0}
    if not args.no_st:
        results["sentence-transformers exact"], st_speed = run_st(chunks, queries)
    speed.update(st_speed)

    kinds = sorted({q["type"] for q in queries})
    counts = ", ".join(f"{sum(q['type'] == k for q in queries)} {k}" for k in kinds)
    print(f"\n{len(files)} documents ({speed['kb_chunks']} kb chunks, {speed['kb_vector_index']} index), "
          f"{len(queries)} queries ({counts}), "
          f"{platform.machine()}, {os.cpu_count()} cores")
    print(f"{'system':30}" + "".join(f"{'nDCG@10 ' + k:>18}" for k in kinds + ["all"]) + f"{'recall@10':>11}")
    for name, r in results.items():
        print(f"{name:30}" + "".join(f"{r[f'ndcg@10_{k}']:18.4f}" for k in kinds + ["all"]) + f"{r['recall@10']:11.4f}")
    gain = results["kb hybrid"]["ndcg@10_all"] - results["plain RRF (kb's lists)"]["ndcg@10_all"]
    kb_tps, st_tps = speed["kb_tokens"] / speed["kb_index_s"], speed["st_tokens"] / speed["st_encode_s"]
    kb_dps, st_dps = speed["kb_docs"] / speed["kb_index_s"], len(texts) / speed["st_encode_s"]  # same chunks
    tuned = results["kb hybrid, tuned (2-fold)"]["ndcg@10_all"] - results["plain RRF (kb's lists)"]["ndcg@10_all"]
    print(f"kb hybrid ({speed['fusion']}) - plain RRF: {gain:+.4f} nDCG@10; tuned per store "
          f"({'; '.join(speed['tuned_fusion'])}): {tuned:+.4f}")
    print(f"hybrid query, warm, k=10: p50 {speed['hybrid_p50_ms']:.1f} ms, p95 {speed['hybrid_p95_ms']:.1f} ms")
    print(f"indexing: kb index {speed['kb_index_s']:.0f} s ({kb_dps:.0f} docs/s, {kb_tps:.0f} tokens/s embedded), "
          f"sentence-transformers encode {speed['st_encode_s']:.0f} s ({st_dps:.0f} docs/s, {st_tps:.0f} tokens/s); "
          f"kb/ST {kb_dps / st_dps:.2f}x docs/s, {kb_tps / st_tps:.2f}x tokens/s")
    named = {f"{n.split(' (')[0].replace(' ', '_').replace('-', '_')}_{k}": v
             for n, r in results.items() for k, v in r.items()}
    emit("retrieval", docs=len(files), queries=len(queries), **named, hybrid_minus_rrf=round(gain, 4),
         tuned_minus_rrf=round(tuned, 4), **{k: _num(v) for k, v in speed.items()}, set=args.set, model=args.model,
         kb_over_st_docs_per_s=_num(kb_dps / st_dps), kb_over_st_tokens_per_s=_num(kb_tps / st_tps))


def _num(v):
    """Floats rounded, NaN (a system not run) as null."""
    return (None if v != v else round(v, 3)) if isinstance(v, float) else v


if __name__ == "__main__":
    main()
