"""Search: one retriever per module behind `Searcher.search`.

- `bm25`: query terms -> a row sum over the precomputed BM25 score cache.
- `vector`: the query embedded by the store's encoder -> its vector index, with the query's
  background similarity for calibration.
- `fusion`: the two candidate lists -> one ranking (rrf, weighted, calibrated), and the store's
  chosen method; `language`: a query's language, for weights per language.
- `searcher`: validation, the mode's retrievers, fusion and the hits' rows (`Searcher`).
- `evaluate`: retrieval metrics over labelled queries, and tuning the fusion (`kb eval`).

Their SQL is in kb.index.store.lookup.
"""

from kb.index.search.results import Hit, QueryResult
from kb.index.search.paths import Scope
from kb.index.search.searcher import MODES, SearchConfig, Searcher

__all__ = ["Hit", "MODES", "QueryResult", "Scope", "SearchConfig", "Searcher"]
