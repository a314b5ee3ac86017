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
) -> None:
    """Search the index: best passages for TEXT."""
    from rich.text import Text

    from kb.index.search import Searcher
    from kb.index.store import Store

    queries = inputs.texts(text, file, "query")
    searcher = Searcher(Store.open(db))
    out = render.console()
    noted = False
    for q in queries:
        result = searcher.search(q, k=k, mode=mode, path_glob=path and path_text(path))
        if json_out:
            render.print_json(result.to_json())
            continue
        if result.note and not noted:  # once: every query of a --file falls back alike
            render.warn(result.note)
            noted = True
        if file is not None:
            out.print(Text("query: " + one_line(q)))
        render.query_result(result, out)
