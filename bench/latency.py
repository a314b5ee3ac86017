"""Cold `kb query` latency: what a script, an editor hook or a shell pays per call. A store of
10,000 real documents (bench/corpus.py's docstrings, MiniLM vectors); each query runs in a fresh
`kb` process, bm25 and hybrid, and hybrid again with the torch query encoder, the path kb took
before kb.embed.light (KB_QUERY_ENCODER=torch): the baseline. Then, in one process, the top 10 of
1,000 queries through the numpy encoder against the torch one.

    python bench/latency.py [--docs 10000] [--runs 20] [--queries 1000] [--store DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import corpus
from common import emit, ratio

KB = [sys.executable, "-m", "kb.cli"]


def _store(docs: int, store: Path) -> Path:
    folder = corpus.build(docs)
    subprocess.run([*KB, "index", str(folder), "--db", str(store), "--quiet"], check=True)
    return folder


def cold(store: Path, queries: list[str], mode: str, encoder: str) -> dict:
    """Wall seconds of one fresh `kb query --json` per query (p50, max), and the p50 of what the
    process itself reported (load, embed, search)."""
    env = {**os.environ, "KB_QUERY_ENCODER": encoder, "NO_COLOR": "1"}
    walls, parts = [], []
    for q in queries:
        t0 = time.perf_counter()
        out = subprocess.run([*KB, "query", q, "--db", str(store), "--mode", mode, "--json"],
                             capture_output=True, text=True, env=env, check=True).stdout
        walls.append(time.perf_counter() - t0)
        parts.append(json.loads(out)["timings_ms"])
    keys = sorted({k for p in parts for k in p})
    return {"p50_s": round(statistics.median(walls), 3), "max_s": round(max(walls), 3),
            "inside_ms_p50": {k: round(statistics.median(p.get(k, 0.0) for p in parts), 1) for k in keys}}


def same_top10(store: Path, queries: list[str]) -> dict:
    """Share of queries whose hybrid top 10 (in order, and as a set) is the same through both encoders."""
    from kb.index.search import Searcher, SearchConfig
    from kb.index.store import Store

    db = Store.open(store)
    light, heavy = (Searcher(db, SearchConfig(query_encoder=e)) for e in ("numpy", "torch"))
    ordered = as_set = 0
    for q in queries:
        a = [(h.path, h.start_line) for h in light.search(q, k=10).results]
        b = [(h.path, h.start_line) for h in heavy.search(q, k=10).results]
        ordered += a == b
        as_set += set(a) == set(b)
    return {"queries": len(queries), "same_order": ordered / len(queries), "same_set": as_set / len(queries)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=20, help="fresh processes per mode")
    ap.add_argument("--queries", type=int, default=1000, help="for the top-10 comparison")
    ap.add_argument("--store", default=str(corpus.DATA / "latency-store"))
    args = ap.parse_args()
    store = Path(args.store)
    folder = _store(args.docs, store)
    texts = [q["text"] for q in corpus.known_item_queries(folder, max(args.queries, args.runs), seed=7)]
    few = texts[:args.runs]
    rows = {"bm25": cold(store, few, "bm25", "auto"), "hybrid": cold(store, few, "hybrid", "auto"),
            "hybrid (torch encoder)": cold(store, few, "hybrid", "torch")}
    print(f"cold kb query, {args.docs} documents, {args.runs} fresh processes each:")
    for name, r in rows.items():
        print(f"  {name:24} p50 {r['p50_s']:.3f} s  max {r['max_s']:.3f} s  inside (ms, p50) {r['inside_ms_p50']}")
    agree = same_top10(store, texts[:args.queries])
    print(f"hybrid top 10, numpy vs torch query encoder, {agree['queries']} queries: "
          f"same order {agree['same_order']:.3f}, same set {agree['same_set']:.3f}")
    speedup = ratio(rows["hybrid (torch encoder)"]["p50_s"], rows["hybrid"]["p50_s"])
    print(f"cold hybrid: {speedup}x faster than with the torch encoder")
    emit("latency", docs=args.docs, runs=args.runs, cold=rows, top10=agree, hybrid_speedup=speedup)


if __name__ == "__main__":
    main()
