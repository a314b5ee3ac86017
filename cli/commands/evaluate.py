"""`kb eval QUERIES QRELS [--tune [--apply]]`"""

from __future__ import annotations

from kb.cli import options, render


def evaluate(
    queries: options.Queries,
    qrels: options.Qrels,
    db: options.Db = None,
    json_out: options.Json = False,
    tune: options.Tune = False,
    apply: options.Apply = False,
) -> None:
    """Retrieval quality of each mode on labelled queries: nDCG@10, recall@10/@100, MRR@10, queries/s."""
    from kb.index.search.evaluate import evaluate_store

    report = evaluate_store(db, queries, qrels, tune=tune, apply=apply)
    if json_out:
        render.print_json(report)
    else:
        render.evaluation(report, render.console())
