"""`kb query TEXT` / `kb query --file F`"""

from __future__ import annotations

from kb.cli import inputs, options, render
from kb.names import one_line, path_text


def query(
    text: options.QueryText = None,
    db: options.Db = None,
    k: options.Results = 10,
    mode: options.Mode = "hybrid",
    path: options.PathGlob = None,
    kinds: options.Kinds = None,
    since: options.Since = None,
    collections: options.Collections = None,
    min_score: options.MinScore = None,
    context_lines: options.ContextLines = 0,
    json_out: options.JsonLines = False,
    fmt: options.Format = None,
    files_only: options.FilesOnly = False,
    file: options.QueryFile = None,
    rerank: options.Rerank = False,
    rerank_model: options.RerankModel = None,
    rerank_depth: options.RerankDepth = 20,
    query_encoder: options.QueryEncoder = "auto",
) -> None:
    """Search the index: best passages for TEXT."""
    from dataclasses import replace

    from kb.index.search import Searcher, SearchConfig
    from kb.index.search.document import around
    from kb.index.store import Store

    queries, fmt, store = inputs.texts(text, file, "query"), _format(fmt, json_out, files_only), Store.open(db)
    scope = _scope(store, path, kinds, since, collections)
    searcher = Searcher(store, SearchConfig(query_encoder=query_encoder))
    reranker = _reranker(store, rerank, rerank_model, rerank_depth, mode)
    depth = max(k, rerank_depth) if reranker else k

    def run(q: str):
        result = searcher.search(q, k=depth, mode=mode, scope=scope)
        result = reranker.rerank(result, k) if reranker else result
        result = replace(result, around=around(store, result.results, context_lines)) if context_lines > 0 else result
        return result.above(min_score) if min_score is not None else result
    _show(map(run, queries), fmt, file is not None)


def _scope(store, path, kinds, since, collections):
    from kb.index.collections import pick
    from kb.index.search import Scope
    from kb.index.search.paths import since as since_time

    roots = tuple(c.root for c in pick(store, collections)) if collections else ()
    return Scope(path and path_text(path), tuple(kinds or ()), since_time(since) if since else None, roots)


def _show(results, fmt: str, several: bool) -> None:
    """Each result as it comes, in `fmt`; a note on a fallback once (every query of a --file falls
    back alike), on stderr, unless the JSON carries it."""
    from rich.text import Text

    from kb.cli.formats import Writer

    writer, out, noted = Writer(fmt), render.console(), False
    for result in results:
        if result.note and not noted and fmt != "json":
            render.warn(result.note)
            noted = True
        if fmt != "text":
            writer.write(result)
            continue
        if several:
            out.print(Text("query: " + one_line(result.query)))
        render.query_result(result, out)


def _format(fmt: str | None, json_out: bool, files_only: bool) -> str:
    from kb.cli.formats import FORMATS
    from kb.errors import UsageError

    asked = [f for f, on in ((fmt, fmt is not None), ("json", json_out), ("files", files_only)) if on]
    if len(set(asked)) > 1:
        raise UsageError(f"--format, --json and -l ask for different outputs ({', '.join(asked)}): give one")
    chosen = asked[0] if asked else "text"
    if chosen not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}")
    return chosen


def _reranker(store, rerank: bool, model: str | None, depth: int, mode: str):
    """The reranker `--rerank` asks for, or None. Off unless asked: with the small models that install
    offline it did not pay (bench/rerank.py, docs/performance.md)."""
    from kb.errors import UsageError
    from kb.rag.rerank import Reranker, RerankConfig

    if not rerank:
        return None
    if mode != "hybrid":
        raise UsageError("--rerank reorders hybrid results: use it with --mode hybrid")
    return Reranker(store, RerankConfig(model=model, depth=depth))
