"""Embedding on the GPU while `kb index` is still reading files.

The main thread hands each committed batch's new chunks (text hash, token ids) to a thread that
owns the encoder; it gathers them into batches of the encoder's GPU token budget and embeds them,
and the main thread writes the vectors that are ready inside its next transaction. So reading and
chunking (CPU, worker processes), the GPU and SQLite work at once. The thread starts with the first
new chunk (a run that changes nothing never loads torch), and stands aside at once when the encoder
is not on a GPU: there the CPU cores are the readers', and the chunks are embedded after reading
as before. Whatever it has not embedded when reading ends is embedded by the usual pass.
"""

from __future__ import annotations

import queue
import threading


class GpuFeed:
    def __init__(self, embed_cfg):
        self.cfg = embed_cfg
        self._in: queue.Queue = queue.Queue()
        self._out: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self.active = True

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
        from kb.embed.encoder import load_encoder

        try:
            encoder = load_encoder(self.cfg)
            if encoder.packed is None:
                self.active = False
                return
            pending, tokens = [], 0
            while True:
                rows = self._in.get()
                if rows is not None:
                    pending += rows
                    tokens += sum(len(ids) for _, ids in rows)
                if pending and (rows is None or tokens >= self.cfg.gpu_batch_tokens):
                    vectors = encoder.embed_passages([ids for _, ids in pending])
                    self._out.put(([h for h, _ in pending], vectors))
                    pending, tokens = [], 0
                if rows is None:
                    return
        except Exception:  # the usual pass after reading embeds what is left, or says why not
            self.active = False
