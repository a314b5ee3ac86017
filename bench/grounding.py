"""Answered or declined: questions a corpus cannot answer though it shares their words, and questions
it can, over CMake's help and the sources of rich, typer and click (bench/identifiers.py's corpus).

    python bench/grounding.py [--models qwen2.5-coder-0.5b,smollm2-135m] [--depth 3]

Unanswerable: bench/unanswerable.jsonl, 28 general-knowledge and everyday questions, written to
share words with software docs (build, table, style, progress, target, default, console, prompt,
emoji, test, install, register). Answerable: "What is NAME?" for each of bench/identifiers.py's 80
identifier queries; the page or file that defines NAME answers it.

Two gates, measured apart and together: kb ask's relevance threshold (the best hybrid score under
0.25 declines, kb.rag.sources.MIN_SCORE; no generator), and the reranker's judgement of the best
--depth passages (kb.rag.rerank: the probability that a passage is relevant, the best of them under
a cut-off declines). For each cut-off: the share of answerable questions declined (should be at
most 0.05) and of unanswerable ones declined (should be at least 0.9). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import identifiers  # noqa: E402
from common import emit, machine  # noqa: E402

CUTS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
HERE = Path(__file__).resolve().parent


def ask_rows(store, asked: dict[str, list[str]], model: str) -> dict:
    """kb ask's own outcome per question set: declined, answered with a flag, either (and the flags seen)."""
    from kb.rag.ask import AskConfig, Asker

    asker = Asker(store, AskConfig(model=model, max_tokens=96))
    t0 = time.perf_counter()
    answers = {k: asker.ask_many(qs) for k, qs in asked.items()}
    rows = {f"kb ask {model} seconds per question": (time.perf_counter() - t0) / sum(map(len, asked.values()))}
    for name, test in (("declined", lambda a: a.declined), ("flagged", lambda a: a.flag is not None),
                       ("declined or flagged", lambda a: a.declined or a.flag is not None)):
        rows[f"kb ask {model}: {name}"] = {k: sum(map(test, a)) / len(a) for k, a in answers.items()}
    for k, a in answers.items():
        for q, x in zip(asked[k], a):
            if k == "unanswerable" and not x.declined:
                print(f"- {q}\n  {x.flag or 'GROUNDED'}: {' '.join(x.answer.split())[:140]}")
    return rows


def main() -> None:
    from kb.index.indexer import IndexConfig, index_paths
    from kb.index.search import Searcher
    from kb.index.store import Store
    from kb.rag.rerank import Reranker, RerankConfig
    from kb.rag.sources import MIN_SCORE

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="qwen2.5-coder-0.5b,smollm2-135m")
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--ask", default="", help="also answer every question with kb ask and this model: "
                                               "declined, flagged (not grounded), either")
    args = ap.parse_args()
    folder = identifiers.build()
    store_dir = HERE / "data" / "identifiers-kb"
    index_paths([folder], store_dir, IndexConfig())  # incremental: nothing to do after the first run
    store = Store.open(store_dir)
    searcher = Searcher(store)
    asked = {"answerable": [f"What is {q['text']}?" for q in identifiers.queries(folder, 40, 40)],
             "unanswerable": [json.loads(line)["question"] for line in (HERE / "unanswerable.jsonl").open()]}
    hits = {k: [searcher.search(q, k=args.depth).results for q in qs] for k, qs in asked.items()}
    rows = {"threshold": {k: sum(not h or h[0].score < MIN_SCORE for h in hs) / len(hs) for k, hs in hits.items()}}
    for model in args.models.split(","):
        rr = Reranker(store, RerankConfig(model=model, depth=args.depth))
        t0 = time.perf_counter()
        best = {k: [max(rr.relevance(q, h)) if h else 0.0 for q, h in zip(asked[k], hs)] for k, hs in hits.items()}
        seconds = (time.perf_counter() - t0) / sum(map(len, asked.values()))
        for cut in CUTS:
            rows[f"{model} p<{cut}"] = {k: sum(p < cut for p in ps) / len(ps) for k, ps in best.items()}
            rows[f"threshold or {model} p<{cut}"] = {
                k: sum(not h or h[0].score < MIN_SCORE or p < cut for h, p in zip(hits[k], best[k])) / len(best[k])
                for k in best}
        rows[f"{model} seconds per question"] = seconds
    if args.ask:
        rows.update(ask_rows(store, asked, args.ask))
    store.close()
    print(f"\n{len(asked['answerable'])} answerable, {len(asked['unanswerable'])} unanswerable questions, "
          f"{machine()}\n{'gate':45}{'answerable declined':>22}{'unanswerable declined':>24}")
    for name, r in rows.items():
        if isinstance(r, dict):
            print(f"{name:45}{r['answerable']:22.3f}{r['unanswerable']:24.3f}")
        else:
            print(f"{name:45}{r:22.2f}")
    emit("grounding", machine=machine(), rows=rows)


if __name__ == "__main__":
    main()
