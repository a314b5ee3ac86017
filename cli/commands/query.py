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
    json_out: options.JsonLines = False,
    file: options.QueryFile = None,
    rerank: options.Rerank = False,
    rerank_model: options.RerankModel = None,
    rerank_depth: options.RerankDepth = 20,
) -> None:
    """Search the index: best passages for TEXT."""
    from rich.text import Text

    from kb.index.search import Searcher
    from kb.index.store import Store

    queries = inputs.texts(text, file, "query")
    store = Store.open(db)
    searcher = Searcher(store)
    reranker = _reranker(store, rerank, rerank_model, rerank_depth, mode)
    out = render.console()
    noted = False
    for q in queries:
        depth = max(k, rerank_depth) if reranker else k
        result = searcher.search(q, k=depth, mode=mode, path_glob=path and path_text(path))
        if reranker:
            result = reranker.rerank(result, k)
        if json_out:
            render.print_json(result.to_json())
            continue
        if result.note and not noted:  # once: every query of a --file falls back alike
            render.warn(result.note)
            noted = True
        if file is not None:
            out.print(Text("query: " + one_line(q)))
        render.query_result(result, out)


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
