"""Approximate vector indexes against exact search, on real-text vectors.

    python bench/vectors.py [--docs 59000] [--queries 1000]

Vectors: docstrings of the standard library and installed packages (bench/corpus.py), embedded by
kb's encoder with the default model (all-MiniLM-L6-v2) and cached under bench/data (embedding 59k
docstrings takes about 15 minutes on a 2-core CPU, seconds on a GPU). Queries: held-out docstrings
not in the index. For kb's hnsw and ivf indexes, with the parameters `kb index` uses (and ivf
forced to the product-quantised codes it uses from 2M vectors): recall@10
against kb's flat index, single-query latency (1 thread) and build time; plain hnswlib and faiss
with their default search settings run beside them as the baseline a user would pick.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")  # single-query latency on one thread; builds as they come

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus as bench_corpus  # noqa: E402
from common import emit  # noqa: E402


def embedded(n: int) -> np.ndarray:
    """(n, 384) float32 vectors of the first n docstrings, cached."""
    cache = bench_corpus.DATA / f"docstring-vectors-{n}.npy"
    if cache.exists():
        return np.load(cache)
    from kb.embed import load_encoder
    from kb.embed.encoder import EmbedConfig

    encoder = load_encoder(EmbedConfig())
    texts = []
    for _, doc in bench_corpus._docstrings(12):
        texts.append(doc)
        if len(texts) == n:
            break
    if len(texts) < n:
        raise SystemExit(f"only {len(texts)} docstrings found; ask for fewer")
    t0 = time.perf_counter()
    ids = [encoder.tokenizer.encode(t).ids for t in texts]
    vecs = encoder.embed_passages(ids)
    print(f"embedded {n} docstrings in {time.perf_counter() - t0:.0f} s on {encoder.device}", flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, vecs)
    return vecs


def recall(found: list[np.ndarray], truth: list[np.ndarray], k: int = 10) -> float:
    return float(np.mean([len(np.intersect1d(f[:k], t[:k])) / k for f, t in zip(found, truth)]))


def timed_search(search, queries: np.ndarray, k: int = 10):
    out, times = [], []
    for q in queries:
        t0 = time.perf_counter()
        out.append(search(q, k))
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=59_000)
    ap.add_argument("--queries", type=int, default=1000)
    args = ap.parse_args()
    vecs = embedded(args.docs)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(vecs))
    qvecs, base = vecs[order[:args.queries]], vecs[order[args.queries:]]
    ids = np.sort(rng.choice(10 * len(base), len(base), replace=False)).astype(np.int64)  # sparse chunk ids

    from kb.index.vectors import flat, hnsw, ivf

    results = {}
    exact = flat.build(ids, base)
    truth, flat_ms = timed_search(lambda q, k: exact.search(q, k)[0], qvecs)
    results["kb flat (exact)"] = {"recall@10": 1.0, "p50_ms": flat_ms, "build_s": 0.0}
    builds = (("kb hnsw", hnsw.build), ("kb ivf", ivf.build),
              ("kb ivf-pq (forced)", lambda i, v: ivf.build(i, v, pq=True)))
    for name, build in builds:
        t0 = time.perf_counter()
        index = build(ids, base)
        build_s = time.perf_counter() - t0
        found, ms = timed_search(lambda q, k: index.search(q, k)[0], qvecs)
        results[name] = {"recall@10": recall(found, truth), "p50_ms": ms, "build_s": build_s}

    import faiss
    import hnswlib

    t0 = time.perf_counter()
    plain = hnswlib.Index(space="ip", dim=base.shape[1])
    plain.init_index(max_elements=len(base))  # defaults: M 16, ef_construction 200, ef 10
    plain.add_items(base, ids)
    build_s = time.perf_counter() - t0
    found, ms = timed_search(lambda q, k: plain.knn_query(q.reshape(1, -1), k=k)[0][0], qvecs)
    results["hnswlib defaults"] = {"recall@10": recall(found, truth), "p50_ms": ms, "build_s": build_s}

    t0 = time.perf_counter()
    nlist = int(4 * np.sqrt(len(base)))
    fidx = faiss.IndexIVFFlat(faiss.IndexFlatIP(base.shape[1]), base.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    fidx.train(base)
    fidx.add_with_ids(base, ids)  # default nprobe 1
    build_s = time.perf_counter() - t0
    found, ms = timed_search(lambda q, k: fidx.search(q.reshape(1, -1), k)[1][0], qvecs)
    results[f"faiss IVF{nlist},Flat defaults"] = {"recall@10": recall(found, truth), "p50_ms": ms, "build_s": build_s}

    print(f"\n{len(base)} real-text vectors ({base.shape[1]} dims), {len(qvecs)} held-out queries, k=10, "
          f"{os.cpu_count()} cores, 1 search thread")
    print(f"{'index':28} {'recall@10':>10} {'p50 ms':>8} {'build s':>8}")
    for name, r in results.items():
        print(f"{name:28} {r['recall@10']:10.4f} {r['p50_ms']:8.3f} {r['build_s']:8.1f}")
    emit("vectors", vectors=len(base), queries=len(qvecs),
         **{f"{n.split(' (')[0].replace(' ', '_').replace(',', '_')}_{k}": round(v, 4)
            for n, r in results.items() for k, v in r.items()})


if __name__ == "__main__":
    main()
