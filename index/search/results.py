"""What search returns: each retriever's candidates before fusion, and the ranked hits."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class Candidates:
    """One retriever's best chunks before fusion, and the reference its scores are read against:
    for BM25 the most the query could score, for vectors the query's background similarity."""

    ids: np.ndarray
    scores: np.ndarray
    ref: float
    spread: float = 0.0  # vectors: the standard deviation of the background similarities
    keywords: bool = False  # the query is keyword-style (fusion.keyword_style)


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    path: str  # relative to the folder given to `kb index`
    start_line: int
    end_line: int
    heading: str
    text: str
    root: str
    chunk_id: int


@dataclass
class QueryResult:
    query: str
    mode: str
    results: list[Hit]
    timings_ms: dict[str, float] = field(default_factory=dict)
    note: str | None = None  # e.g. why hybrid fell back to bm25
    terms: list[str] = field(default_factory=list)  # the query's indexed terms (for highlighting)
    rerank: dict | None = None  # model, depth and weight, where a reranker reordered the hits
    around: list[dict] | None = None  # per hit, lines before and after it (`kb query -C N`)

    def above(self, floor: float) -> "QueryResult":
        """The hits scoring `floor` or more (`--min-score`); ranks are kept."""
        from dataclasses import replace

        keep = [i for i, h in enumerate(self.results) if h.score >= floor]
        return replace(self, results=[self.results[i] for i in keep],
                       around=[self.around[i] for i in keep] if self.around is not None else None)

    def to_json(self) -> dict:
        out = {"query": self.query, "mode": self.mode,
               "results": [{**{k: v for k, v in asdict(h).items() if k != "chunk_id"},
                            **(self.around[i] if self.around is not None else {})}
                           for i, h in enumerate(self.results)],
               "timings_ms": self.timings_ms}
        if self.note:
            out["note"] = self.note
        if self.rerank:
            out["rerank"] = self.rerank
        return out
