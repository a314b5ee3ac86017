"""BM25 benchmark: kb against bm25s and SQLite FTS5 on the same real-text corpus, in one process.

    python bench/bm25.py [--docs 12000] [--queries 1000]

Corpus: docstrings of the Python standard library and installed packages (bench/corpus.py), one file each. Queries:
known-item (3 words of a document + 1 noise word); quality is MRR@10 and hit@10 of that document.
Speed: single-threaded queries/s of a warm process, k=10, each system doing its whole query path
(kb: analysis, term lookup in SQLite, scoring, fetching the chunk rows; bm25s: tokenise + retrieve;
FTS5: MATCH ... ORDER BY rank). bm25s runs twice: on whole documents, and on the very chunks kb
ranks (kb returns passages of at most 240 tokens, which costs some known-item MRR on long
documents; the second run compares the BM25 engines on identical passages).
Also: kb's cold index time (chunking included) and an incremental update.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = "1"  # single-threaded comparison

import argparse
import platform
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus as bench_corpus  # noqa: E402
from common import emit  # noqa: E402


def ranks_quality(ranked_docs: list[list[str]], queries: list[dict]) -> dict:
    mrr = hit = 0.0
    for docs, q in zip(ranked_docs, queries):
        docs = list(dict.fromkeys(docs))[:10]
        if q["doc"] in docs:
            hit += 1
            mrr += 1 / (docs.index(q["doc"]) + 1)
    return {"mrr@10": round(mrr / len(queries), 4), "hit@10": round(hit / len(queries), 4)}


def timed(fn, queries, warmup=50):
    for q in queries[:warmup]:
        fn(q["text"])
    out = []
    t0 = time.perf_counter()
    for q in queries:
        out.append(fn(q["text"]))
    return out, len(queries) / (time.perf_counter() - t0)


def run_kb(folder: Path, queries, work: Path) -> dict:
    from kb.index.indexer import IndexConfig, index_paths
    from kb.index.search import Searcher
    from kb.index.store import Store

    docs = work / "docs"
    shutil.copytree(folder, docs)
    t0 = time.perf_counter()
    bm25_only = IndexConfig(vector_index="none")  # this benchmark is about BM25
    report = index_paths([docs], work / "kb", bm25_only)
    index_s = time.perf_counter() - t0
    store = Store.open(work / "kb")
    searcher = Searcher(store)
    ranked, qps = timed(lambda t: [h.path for h in searcher.search(t, k=10, mode="bm25").results], queries)

    # Incremental update: edit 10 files, add 10, delete 10, then index again.
    rng = random.Random(1)
    files = sorted(docs.rglob("*.txt"))
    for f in rng.sample(files, 10):
        f.write_text(f.read_text() + "\nAn added sentence about incremental indexing.\n")
    for f in rng.sample(files, 10):
        f.unlink(missing_ok=True)
    for i in range(10):
        (docs / f"new{i}.txt").write_text(f"A brand new document number {i} about zebras.\n")
    t0 = time.perf_counter()
    update = index_paths([docs], work / "kb", bm25_only)
    update_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index_paths([docs], work / "kb", bm25_only)
    noop_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    first = searcher.search("zebras", k=10, mode="bm25")  # first query after the update
    first_ms = (time.perf_counter() - t0) * 1000
    assert first.results and first.results[0].path.startswith("new")
    store.close()
    help_ms = cold_ms("--help")
    query_ms = cold_ms("query", "parse command line arguments", "--db", str(work / "kb"), "--mode", "bm25")
    chunks = sqlite3.connect(work / "kb" / "kb.sqlite").execute(
        "SELECT substr(d.path, length(d.root) + 2), c.text FROM chunks c "
        "JOIN documents d ON d.id = c.doc_id ORDER BY c.id").fetchall()
    return {"qps": qps, **ranks_quality(ranked, queries), "index_s": index_s,
            "chunks": report.chunks_added, "update_s": update_s,
            "update": {k: getattr(update, k) for k in ("added", "updated", "removed")},
            "noop_s": noop_s, "first_query_after_update_ms": first_ms,
            "cold_help_ms": help_ms, "cold_query_ms": query_ms}, chunks


def cold_ms(*args: str, runs: int = 7) -> float:
    """Median wall time of a fresh `kb` process (what a shell user or cron job pays)."""
    import statistics
    import subprocess

    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "kb.cli", *args], check=True, capture_output=True)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def run_bm25s(paths: list[str], texts: list[str], queries, depth: int = 10) -> dict:
    """bm25s over `texts`; `paths[i]` is the document of text i (several texts may share one)."""
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    t0 = time.perf_counter()
    retriever = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
    retriever.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False),
                    show_progress=False)
    index_s = time.perf_counter() - t0

    def search(text):
        tokens = bm25s.tokenize([text], stopwords="en", stemmer=stemmer, show_progress=False)
        if not tokens.vocab:
            return []
        idx, _ = retriever.retrieve(tokens, k=depth, n_threads=1, show_progress=False)
        return [paths[i] for i in idx[0]]

    ranked, qps = timed(search, queries)
    return {"qps": qps, **ranks_quality(ranked, queries), "index_s": index_s}


def run_fts5(paths: list[str], texts: list[str], queries, work: Path) -> dict:
    import re

    conn = sqlite3.connect(work / "fts.sqlite")
    t0 = time.perf_counter()
    conn.execute("CREATE VIRTUAL TABLE fts USING fts5(body, tokenize='porter unicode61 remove_diacritics 2')")
    conn.executemany("INSERT INTO fts(rowid, body) VALUES (?, ?)", enumerate(texts))
    conn.commit()
    index_s = time.perf_counter() - t0

    def search(text):
        words = re.findall(r"\w+", text)
        if not words:
            return []
        match = " OR ".join(f'"{w}"' for w in words)
        rows = conn.execute("SELECT rowid FROM fts WHERE fts MATCH ? ORDER BY rank LIMIT 10", (match,))
        return [paths[r[0]] for r in rows]

    ranked, qps = timed(search, queries)
    return {"qps": qps, **ranks_quality(ranked, queries), "index_s": index_s}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=12_000)
    ap.add_argument("--queries", type=int, default=1000)
    args = ap.parse_args()
    folder = bench_corpus.build(args.docs)
    queries = bench_corpus.known_item_queries(folder, args.queries)
    files = sorted(folder.rglob("*.txt"))
    paths = [f.relative_to(folder).as_posix() for f in files]
    texts = [f.read_text() for f in files]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        kb_result, chunks = run_kb(folder, queries, work)
        results = {"kb": kb_result,
                   "bm25s": run_bm25s(paths, texts, queries),
                   # the same passages kb ranks (kb returns chunks, collapsed here to documents)
                   "bm25s_chunks": run_bm25s([p for p, _ in chunks], [t for _, t in chunks], queries, 30),
                   "fts5": run_fts5(paths, texts, queries, work)}
    kb = results["kb"]
    print(f"\n{len(files)} documents ({kb['chunks']} kb chunks), {len(queries)} known-item queries, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, 1 thread")
    print(f"{'system':13} {'queries/s':>10} {'MRR@10':>8} {'hit@10':>8} {'index s':>8}")
    for name, r in results.items():
        print(f"{name:13} {r['qps']:10.0f} {r['mrr@10']:8.4f} {r['hit@10']:8.4f} {r['index_s']:8.2f}")
    print(f"kb/bm25s speed {kb['qps'] / results['bm25s']['qps']:.2f}x, kb/fts5 "
          f"{kb['qps'] / results['fts5']['qps']:.2f}x; incremental update (10 edited, 10 added, "
          f"10 deleted) {kb['update_s']:.2f}s, no-change run {kb['noop_s']:.2f}s, "
          f"first query after update {kb['first_query_after_update_ms']:.0f} ms")
    print(f"cold process: kb --help {kb['cold_help_ms']:.0f} ms, kb query (bm25) {kb['cold_query_ms']:.0f} ms")
    emit("bm25", docs=len(files), queries=len(queries),
         **{f"{n}_{k}": round(v, 4) for n, r in results.items() for k, v in r.items() if isinstance(v, (int, float))},
         kb_over_bm25s=round(kb["qps"] / results["bm25s"]["qps"], 3))


if __name__ == "__main__":
    main()
