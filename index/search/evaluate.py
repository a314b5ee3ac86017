"""Retrieval metrics over labelled queries in BEIR formats: queries JSONL (`_id`, `text`, optional
`type`) and a qrels TSV (query-id, corpus-id, score) whose corpus-id is a document path relative
to the indexed folder. Chunk results are collapsed to documents, best rank first."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from kb.errors import NotFound, UsageError
from kb.index.search import fusion
from kb.index.search.searcher import Searcher
from kb.index.store import Store


@dataclass(frozen=True)
class Query:
    id: str
    text: str
    type: str


def load_queries(path: Path) -> list[Query]:
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
                out.append(Query(str(row["_id"]), row["text"], row.get("type", "")))
            except (ValueError, KeyError) as e:
                raise UsageError(f"{path}:{n}: not a BEIR query line ({e})") from e
    return out


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split("\t")
        if n == 1 and parts[0] == "query-id":
            continue
        if len(parts) < 3:
            if line.strip():
                raise UsageError(f"{path}:{n}: expected query-id, corpus-id, score")
            continue
        qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return qrels


def documents(paths: list[str]) -> list[str]:
    """Chunk paths in rank order -> distinct documents in rank order."""
    return list(dict.fromkeys(paths))


def hit_at(ranked: list[str], relevant: dict[str, int], k: int) -> float:
    return float(any(relevant.get(d, 0) > 0 for d in ranked[:k]))


def reciprocal_rank(ranked: list[str], relevant: dict[str, int], k: int = 10) -> float:
    for i, d in enumerate(ranked[:k], 1):
        if relevant.get(d, 0) > 0:
            return 1.0 / i
    return 0.0


def ndcg_at(ranked: list[str], relevant: dict[str, int], k: int = 10) -> float:
    dcg = sum((2 ** relevant.get(d, 0) - 1) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum((2 ** r - 1) / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: list[str], relevant: dict[str, int], k: int) -> float:
    wanted = {d for d, r in relevant.items() if r > 0}
    return len(wanted.intersection(ranked[:k])) / len(wanted) if wanted else 0.0


def score_run(runs: list[list[str]], queries: list[Query], qrels) -> dict[str, float]:
    """Mean metrics over queries that have judgements."""
    rows = [(r, qrels[q.id]) for r, q in zip(runs, queries) if q.id in qrels]
    if not rows:
        raise UsageError("no query has a judgement in the qrels file")
    mean = lambda f: round(sum(f(r, rel) for r, rel in rows) / len(rows), 4)
    return {"ndcg@10": mean(ndcg_at), "recall@10": mean(lambda r, rel: recall_at(r, rel, 10)),
            "recall@100": mean(lambda r, rel: recall_at(r, rel, 100)),
            "mrr@10": mean(reciprocal_rank), "queries": len(rows)}


def evaluate(searcher: Searcher, queries: list[Query], qrels, modes=("bm25", "vector", "hybrid"),
             depth: int = 300) -> dict[str, dict]:
    """Metrics and queries/s per mode; `depth` chunks are retrieved to rank 100 documents."""
    out = {}
    for mode in modes:
        searcher.search(queries[0].text, k=depth, mode=mode)  # load models and caches first
        t0 = time.perf_counter()
        runs = [documents([h.path for h in searcher.search(q.text, k=depth, mode=mode).results])
                for q in queries]
        qps = len(queries) / (time.perf_counter() - t0)
        out[mode] = {**score_run(runs, queries, qrels), "queries_per_s": round(qps, 1)}
    return out


def tune_fusion(searcher: Searcher, queries: list[Query], qrels, depth: int = 300) -> list[dict]:
    """nDCG@10 of hybrid for each fusion method and vector weight, best first."""
    results = []
    lists = [(searcher.candidates(q.text, depth)) for q in queries]
    for method in fusion.METHODS:
        for weight in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
            runs = [documents([p for p in searcher.fuse_paths(bm, vec, depth, method, weight)])
                    for bm, vec in lists]
            results.append({"method": method, "weight": weight, **score_run(runs, queries, qrels)})
    return sorted(results, key=lambda r: (-r["ndcg@10"], r["method"], r["weight"]))


def evaluate_store(db: Path | None, queries_path: Path, qrels_path: Path, tune: bool = False,
                   apply: bool = False) -> dict:
    """`kb eval`: metrics of each mode the store supports on labelled queries, the fusion in use,
    and with `tune` every fusion's score, best first; with `apply` too, the best becomes the
    store's fusion. NotFound if either file cannot be read (checked before the store is opened)."""
    try:
        queries, qrels = load_queries(queries_path), load_qrels(qrels_path)
    except OSError as e:
        raise NotFound(f"cannot read {e.filename}: {e.strerror}") from e
    store = Store.open(db)
    searcher = Searcher(store)
    modes = ("bm25", "vector", "hybrid") if store.meta("embedding") else ("bm25",)
    report = {"modes": evaluate(searcher, queries, qrels, modes),
              "fusion": dict(zip(("method", "weight"), searcher.fusion()))}
    if tune and "vector" in modes:
        trials = tune_fusion(searcher, queries, qrels)
        report["tuning"] = trials
        if apply:
            best = {"method": trials[0]["method"], "weight": trials[0]["weight"]}
            fusion.save(store, best["method"], best["weight"])
            report["fusion"] = best
    return report
