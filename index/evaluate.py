"""Retrieval metrics over labelled queries in BEIR formats: queries JSONL (`_id`, `text`, optional
`type`) and a qrels TSV (query-id, corpus-id, score) whose corpus-id is a document path relative
to the indexed folder. Chunk results are collapsed to documents, best rank first."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kb.errors import UsageError


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
