"""Embed: a vector for every chunk text that has none under the run's encoder. While the write
phase runs, new chunks go to the GPU feed (kb.embed.feed) as their batches commit, and its vectors
are written inside the next batch's transaction; once writing is over, the feed's last vectors
are written and what is still missing (everything on a CPU) is embedded in one pass, a
transaction per `embed_batch` texts, so that a killed run resumes. Vectors of texts no chunk has
any more are dropped. The vectors this run wrote are kept in memory (up to `known_bytes`) so that
the derive phase builds the vector index without reading them back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from kb.index.phases import Events, PhaseEvent, Stopwatch
from kb.index.store import Store, embeddings


PROGRESS_EVERY = 32  # texts embedded on a CPU between two moves of the progress bar


class Embed:
    def __init__(self, store: Store, embed_cfg, report, progress, embed_batch: int, known_bytes: int):
        from kb.embed.feed import GpuFeed

        self.store, self.cfg, self.report, self.progress = store, embed_cfg, report, progress
        self.embed_batch, self.known_bytes = embed_batch, known_bytes
        self.feed = GpuFeed(embed_cfg)
        self.known: dict[str, np.ndarray] = {}  # text hash -> vector, written by this run
        self._known_bytes = 0
        self._key: str | None = None
        self._fed = Stopwatch()  # writing the feed's vectors
        self._fed_texts = 0

    # The write phase's kb.index.phases.write.ChunkSink
    @property
    def wants_rows(self) -> bool:
        return self.feed.active

    def collect(self, conn) -> None:
        self._write(conn, self.feed.ready())

    def committed(self, rows: list) -> None:
        self.feed.put(rows)

    def run(self, events: Events) -> None:
        """After the write phase: the feed's last vectors, then every text still without one."""
        with self._fed:
            done = self.feed.finish()
            if done:
                with self.store.transaction() as conn:
                    self._write(conn, done)
        fed = {"texts": self._fed_texts, "graph_replays": self.feed.graph_replays}
        events(PhaseEvent("feed", round(self._fed.seconds, 3), fed))
        t0 = time.perf_counter()
        embedded = self._missing()
        self._tidy()
        events(PhaseEvent("embed", round(time.perf_counter() - t0, 3), {"texts": embedded}))

    def _missing(self) -> int:
        """Embed the texts that have no vector yet (batch by batch); how many there were."""
        from kb.embed import load_encoder

        todo = embeddings.missing(self.store.conn, self.key)
        encoder = load_encoder(self.cfg) if todo else None  # loading torch costs seconds
        self.progress.start(len(todo), "embedding")
        # on a CPU the bar moves every few texts; a GPU keeps its whole batches
        step = PROGRESS_EVERY if str(getattr(encoder, "device", "gpu")) == "cpu" else self.embed_batch
        try:
            for i in range(0, len(todo), self.embed_batch):
                part = todo[i:i + self.embed_batch]
                vecs = np.vstack([self._slice(encoder, part[j:j + step]) for j in range(0, len(part), step)])
                with self.store.transaction() as conn:
                    embeddings.write(conn, self.key, [row[0] for row in part], vecs)
                self._remember([row[0] for row in part], vecs)
                self.report.embedded += len(part)
        finally:
            self.progress.finish()
        return len(todo)

    def _slice(self, encoder, part) -> np.ndarray:
        """Vectors of a few texts, then the progress bar moves (a batch of 256 takes tens of
        seconds on a CPU: the bar sat at 0 until it was written)."""
        if hasattr(encoder, "embed_texts"):  # a server (kb.embed.remote) reads the texts themselves
            vecs = encoder.embed_texts([text for _, _, text in part])
        else:
            vecs = encoder.embed_passages([np.frombuffer(blob, np.int32) for _, blob, _ in part])
        for _, blob, _ in part:
            self.progress.advance(Path("embedding"), len(blob) // 4)
        return vecs

    def _tidy(self) -> None:
        """Drop vectors nothing uses; remember which encoder (and settings) made the rest."""
        from kb.embed.encoder import describe

        with self.store.transaction() as conn:
            embeddings.collect_garbage(conn, self.key)
        spec = describe(self.cfg)
        meta = json.dumps({"key": spec.key, "fingerprint": spec.fingerprint, "config": self.cfg.stored()})
        if self.store.meta("embedding") != meta:
            with self.store.transaction(data=False):
                self.store.set_meta("embedding", meta)

    @property
    def key(self) -> str:
        """The encoder's key (kb.embed.encoder.describe), read off its files the first time."""
        if self._key is None:
            from kb.embed.encoder import describe

            self._key = describe(self.cfg).key
        return self._key

    def _write(self, conn, done: list) -> None:
        for hashes, vectors in done:
            embeddings.write(conn, self.key, hashes, vectors)
            self._remember(hashes, vectors)
            self.report.embedded += len(hashes)
            self._fed_texts += len(hashes)

    def _remember(self, hashes: list[str], vectors: np.ndarray) -> None:
        """Keep vectors just written (their transaction commits, or the run fails) for derive."""
        if self._known_bytes + vectors.nbytes > self.known_bytes:
            return
        self._known_bytes += vectors.nbytes
        self.known.update(zip(hashes, vectors.astype(np.float32, copy=False)))
