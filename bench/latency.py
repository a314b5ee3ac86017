"""Cold `kb query` latency: what a script, an editor hook or a shell pays per call. A store of
10,000 real documents (bench/corpus.py's docstrings, MiniLM vectors); each query runs in a fresh
`kb` process, bm25 and hybrid, and hybrid again with the torch query encoder, the path kb took
before kb.embed.light (KB_QUERY_ENCODER=torch): the baseline. Then, in one process, the top 10 of
1,000 queries through the numpy encoder against the torch one. Then the same store served
(`kb serve`, bench/served.py): warm queries over HTTP, 20 clients at once, and an answer's time to
first token served against the CLI's (`--ask`: needs the default generator installed).

    python bench/latency.py [--docs 10000] [--runs 20] [--queries 1000] [--store DIR] [--ask]
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
    ap.add_argument("--ask", action="store_true", help="also time an answer's first token, served and CLI")
    ap.add_argument("--served-only", action="store_true", help="skip the cold runs")
    args = ap.parse_args()
    store = Path(args.store)
    folder = _store(args.docs, store)
    texts = [q["text"] for q in corpus.known_item_queries(folder, max(args.queries, args.runs), seed=7)]
    few = texts[:args.runs]
    if args.served_only:
        return emit("latency", docs=args.docs, served=served_figures(store, texts[:args.queries], args.ask))
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
    warm = served_figures(store, texts[:args.queries], args.ask)
    emit("latency", docs=args.docs, runs=args.runs, cold=rows, top10=agree, hybrid_speedup=speedup, served=warm)


def served_figures(store: Path, queries: list[str], ask: bool) -> dict:
    import served

    proc, port = served.start(store)
    try:
        out = {"hybrid": served.warm_queries(port, queries, "hybrid"), "bm25": served.warm_queries(port, queries, "bm25"),
               "concurrent": served.concurrent(port, queries)}
        if ask:
            question = "How do I parse command line arguments?"
            served.first_token_served(port, question)  # loads the generator
            out["ask_first_token_s"] = {"served": round(served.first_token_served(port, question), 3),
                                        "cli": round(served.first_token_cli(store, question), 3)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"served (kb serve), {len(queries)} warm queries, one client: hybrid p50 {out['hybrid']['p50_ms']} ms "
          f"p99 {out['hybrid']['p99_ms']} ms; bm25 p50 {out['bm25']['p50_ms']} ms")
    c = out["concurrent"]
    print(f"  {c['clients']} clients at once, {c['requests']} hybrid queries: {c['errors']} errors, "
          f"p50 {c['p50_ms']} ms, p99 {c['p99_ms']} ms, {c['queries_per_s']} queries/s")
    if "ask_first_token_s" in out:
        print(f"  kb ask, time to first token: served {out['ask_first_token_s']['served']} s, "
              f"CLI {out['ask_first_token_s']['cli']} s")
    return out


if __name__ == "__main__":
    main()
