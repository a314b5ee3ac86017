"""CUDA graphs for decode steps: one graph per batch size in BATCH_SIZES, captured over static
input buffers; a step of n sequences replays the smallest graph of at least n, its spare rows
pointed at a scratch block so that their writes touch nothing real. The decode kernel's grid is
fixed by the longest context the cache can hold, so a replay is valid for any context length.
"""

from __future__ import annotations

import torch

from kb.rag.attention import Batch

BATCH_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)


class DecodeGraphs:
    def __init__(self, engine):
        self.engine = engine
        pool, model, dev = engine.pool, engine.model, engine.device
        self.sizes = [b for b in BATCH_SIZES if b <= engine.cfg.max_seqs]
        self.max_ctx = min(model.cfg.max_positions, pool.num_blocks * pool.block_size)
        width = (self.max_ctx + pool.block_size - 1) // pool.block_size
        self.scratch = pool.allocate()  # padding rows write here
        top = self.sizes[-1]
        self.ids = torch.zeros(top, dtype=torch.long, device=dev)
        self.pos = torch.zeros(top, dtype=torch.long, device=dev)
        self.slots = torch.full((top,), self.scratch * pool.block_size, dtype=torch.long, device=dev)
        self.tables = torch.full((top, width), self.scratch, dtype=torch.int32, device=dev)
        self.ctx = torch.ones(top, dtype=torch.int32, device=dev)
        self.cu = torch.arange(top + 1, dtype=torch.int32, device=dev)
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.mempool = torch.cuda.graph_pool_handle()
        for b in reversed(self.sizes):  # largest first, so smaller ones reuse its memory
            self._capture(b)

    def fits(self, n: int) -> bool:
        return n <= self.sizes[-1]

    def _batch(self, b: int) -> Batch:
        return Batch([1] * b, [1] * b, self.tables[:b], self.slots[:b], self.cu[:b + 1], self.ctx[:b],
                     max_ctx=self.max_ctx)

    def _capture(self, b: int) -> None:
        model, batch = self.engine.model, self._batch(b)
        attend = self.engine._attend(batch)
        with torch.inference_mode():
            for _ in range(2):  # warm up: Triton compiles, cuBLAS picks its kernels
                model.logits(model(self.ids[:b], self.pos[:b], attend))
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.mempool):
                logits = model.logits(model(self.ids[:b], self.pos[:b], attend))
        self.graphs[b] = (graph, logits)

    def run(self, ids: torch.Tensor, pos: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Logits (n, vocab) of a decode step of n sequences."""
        n = len(ids)
        b = next(s for s in self.sizes if s >= n)
        bs = self.engine.pool.block_size
        self.ids[:n], self.pos[:n] = ids, pos
        self.slots[:n] = batch.slots
        self.slots[n:b] = self.scratch * bs
        self.ctx[:n] = batch.ctx
        self.ctx[n:b] = 1
        self.tables[:b] = self.scratch
        self.tables[:n, :batch.block_tables.shape[1]] = batch.block_tables
        graph, logits = self.graphs[b]
        graph.replay()
        return logits[:n]
