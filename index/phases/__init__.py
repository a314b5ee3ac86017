"""The phases of `kb index`, each a unit with explicit inputs and outputs, sequenced by
kb.index.indexer:

    plan    targets -> the files to look at per target (settings checked, folders walked)
    read    files -> documents: extracted, chunked, tokenised, analysed (kb.index.readpool,
            worker processes, consumed by write in the files' order)
    write   documents -> rows: documents, chunks, postings, one transaction per batch of files
    embed   new chunk texts -> vectors: during write through the GPU feed (kb.embed.feed), then
            whatever is left in one pass
    derive  rows -> derived files: the BM25 cache, the vector index, the WAL checkpoint, and the
            KV blocks of chunks that are gone pruned

Each phase reports a `PhaseEvent` (name, seconds, counts) when it ends, through the `events`
callback given to kb.index.indexer.index_paths; the benchmarks read them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class PhaseEvent:
    phase: str  # plan | read | write | feed | embed | derive
    seconds: float  # wall time in the phase (read: time the writer waited for the readers)
    counts: dict = field(default_factory=dict)  # what the phase did: files, chunks, texts, ...


Events = Callable[[PhaseEvent], None]


def no_events(event: PhaseEvent) -> None:
    pass


class Stopwatch:
    """Seconds accumulated over several spans (`with watch:`), for a phase interleaved with others."""

    def __init__(self):
        self.seconds = 0.0

    def __enter__(self):
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds += time.perf_counter() - self._t0
