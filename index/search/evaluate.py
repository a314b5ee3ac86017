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
from kb.index.search import fusion, language
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


TITLE_WEIGHTS = (0.0, 1.0, 2.0, 4.0)
FUSION_WEIGHTS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
LANGUAGE_QUERIES = 20  # a language gets weights of its own from this many labelled queries up


def per_query_ndcg(runs: list[list[str]], queries: list[Query], qrels) -> list[float]:
    return [ndcg_at(r, qrels[q.id]) for r, q in zip(runs, queries)]


def tune_fusion(searcher: Searcher, queries: list[Query], qrels, depth: int = 300) -> list[dict]:
    """nDCG@10 of hybrid for each title weight, fusion method and vector weight, best first; each
    trial also holds `by_language`: its nDCG@10 over the queries of each language guessed."""
    queries = [q for q in queries if q.id in qrels]
    if not queries:
        raise UsageError("no query has a judgement in the qrels file")
    vectors = [searcher.vector.candidates(q.text, depth, None, {}) for q in queries]
    groups = _language_groups(queries)
    results = []
    try:
        for title in TITLE_WEIGHTS:
            searcher.bm25.weigh_title(title)
            bm25 = [searcher.bm25.candidates(q.text, depth, None, {})[0] for q in queries]
            for method in fusion.METHODS:
                for weight in FUSION_WEIGHTS:
                    runs = [documents(searcher.fuse_paths(bm, vec, depth, method, weight))
                            for bm, vec in zip(bm25, vectors)]
                    ndcg = per_query_ndcg(runs, queries, qrels)
                    results.append({"title_weight": title, "method": method, "weight": weight,
                                    **score_run(runs, queries, qrels),
                                    "by_language": {g: _mean(ndcg, rows) for g, rows in groups.items()}})
    finally:
        searcher.bm25.weigh_title(None)
    return sorted(results, key=lambda r: (-r["ndcg@10"], r["title_weight"] != 2.0, r["method"], r["weight"]))


def _language_groups(queries: list[Query]) -> dict[str, list[int]]:
    """Positions of the queries of each language with enough of them to tune on."""
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(queries):
        groups.setdefault(language.guess(q.text), []).append(i)
    return {g: rows for g, rows in groups.items() if g and len(rows) >= LANGUAGE_QUERIES}


def _mean(values: list[float], rows: list[int]) -> float:
    return round(sum(values[i] for i in rows) / len(rows), 4)


def chosen(trials: list[dict]) -> dict:
    """The best trial's title weight and fusion, and per language the fusion that is best for its
    queries under that title weight where it beats the store-wide one there."""
    best = trials[0]
    same_title = [t for t in trials if t["title_weight"] == best["title_weight"]]
    languages = {}
    for lang, score in best["by_language"].items():
        top = max(same_title, key=lambda t: t["by_language"][lang])
        if top["by_language"][lang] > score:
            languages[lang] = {"method": top["method"], "weight": top["weight"]}
    return {"title_weight": best["title_weight"], "method": best["method"], "weight": best["weight"],
            **({"languages": languages} if languages else {})}


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
              "fusion": fusion.settings(store)}
    if tune and "vector" in modes:
        report["tuning"] = tune_fusion(searcher, queries, qrels)
        report["chosen"] = chosen(report["tuning"])
        if apply:
            apply_tuning(store, report["chosen"])
            report["fusion"] = report["chosen"]
    return report


def apply_tuning(store: Store, best: dict) -> None:
    """Make `best` (from `chosen`) the store's title weight and fusion."""
    fusion.save(store, best["method"], best["weight"], best.get("languages"))
    with store.transaction(data=False):
        store.set_meta("title_weight", repr(float(best["title_weight"])))
