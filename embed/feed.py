"""Embedding on the GPU while `kb index` is still reading files.

The main thread hands each committed batch's new chunks (text hash, token ids) to a thread that
owns the encoder; it gathers them into batches of `EmbedConfig.feed_batch_tokens` and streams them
through the GPU, and the main thread writes the vectors that are ready inside its next
transaction. So reading and chunking (CPU, worker processes), the GPU and SQLite work at once. The
thread starts with the first new chunk (a run that changes nothing never loads torch), and stands
aside at once when the encoder is not on a GPU: there the CPU cores are the readers', and the
chunks are embedded after reading as before. Whatever it has not embedded when reading ends is
embedded by the usual pass.
"""

from __future__ import annotations

import queue
import threading


class GpuFeed:
    def __init__(self, embed_cfg):
        self.cfg = embed_cfg  # kb.embed.encoder.EmbedConfig
        self._in: queue.Queue = queue.Queue()
        self._out: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self.active = True
        self.graph_replays = 0  # batches that ran as one CUDA graph launch (for the benchmarks)

    def put(self, rows: list[tuple[str, list[int]]]) -> None:
        """New chunks (text hash, token ids), already committed to the store."""
        if not rows or not self.active:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kb-gpu-embed", daemon=True)
            self._thread.start()
        self._in.put(rows)

    def ready(self) -> list[tuple[list[str], object]]:
        """(hashes, vectors) embedded so far and not yet taken."""
        out = []
        while True:
            try:
                out.append(self._out.get_nowait())
            except queue.Empty:
                return out

    def finish(self) -> list[tuple[list[str], object]]:
        if self._thread is not None:
            self._in.put(None)
            self._thread.join()
        return self.ready()

    def _run(self) -> None:
        from kb.embed import load_encoder

        try:
            encoder = load_encoder(self.cfg)
            if not encoder.packed:
                self.active = False
                return
            self._serve(encoder)
        except Exception:  # the usual pass after reading embeds what is left, or says why not
            self.active = False

    def _serve(self, encoder) -> None:
        """Embed what comes in, a full batch at a time, until the None that ends reading."""
        # One stream for the run (one process per GPU with --devices: a call per batch), so the
        # GPU never waits for the next batch to be packed; feed-sized batches keep what is left to
        # embed when reading ends short.
        budget = self.cfg.feed_batch_tokens
        stream = (encoder.passage_stream(budget if self.cfg.feed_graphs else None, self.cfg.feed_depth)
                  if hasattr(encoder, "passage_stream") else None)
        size = stream.tokens if stream is not None else len  # what a text costs the model
        pending: list = []  # (hash, ids, tokens)
        tokens = 0
        while True:
            rows = self._in.get()
            if rows is not None:
                new = [(h, ids, size(ids)) for h, ids in rows]
                pending += new
                tokens += sum(r[2] for r in new)
            while pending and (rows is None or tokens >= budget):
                batch, pending = _take(pending, budget)
                tokens -= sum(r[2] for r in batch)
                hashes, ids = [r[0] for r in batch], [r[1] for r in batch]
                if stream is None:
                    self._out.put((hashes, encoder.embed_passages(ids)))
                else:
                    for done in stream.submit(ids, hashes):
                        self._out.put(done)
            if rows is None:
                for done in (stream.drain() if stream is not None else []):
                    self._out.put(done)
                self.graph_replays = stream.replays if stream is not None else 0
                return


def _take(pending: list, budget: int) -> tuple[list, list]:
    """(the first texts of `pending` that fit in `budget` tokens, at least one; the rest)."""
    take, used = 0, 0
    while take < len(pending) and (take == 0 or used + pending[take][2] <= budget):
        used += pending[take][2]
        take += 1
    return pending[:take], pending[take:]
