"""CUDA graphs for decode steps: one graph per batch size in BATCH_SIZES, each captured over its
own static input buffers (one int64 buffer: token ids, positions, slots; one int32 buffer: query
offsets, context lengths, block tables), so that a step is two host-to-device copies and a replay.
A step of n sequences replays the smallest graph of at least n, its spare rows pointed at a
scratch block so that their writes touch nothing real. The decode kernel's grid is fixed by the
longest context the cache can hold, so a replay is valid for any context length.
"""

from __future__ import annotations

import torch

from kb.rag.attention import Batch, host_arrays, pack

BATCH_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)


class DecodeGraphs:
    def __init__(self, engine):
        self.engine = engine
        pool = engine.pool
        self.sizes = [b for b in BATCH_SIZES if b <= engine.cfg.max_seqs]
        self.max_ctx = min(engine.model.cfg.max_positions, pool.num_blocks * pool.block_size)
        self.width = (self.max_ctx + pool.block_size - 1) // pool.block_size
        self.scratch = pool.allocate()  # padding rows write here
        self.graphs: dict[int, tuple] = {}
        self.mempool = torch.cuda.graph_pool_handle()
        for b in reversed(self.sizes):  # largest first, so smaller ones reuse its memory
            self._capture(b)

    def fits(self, n: int) -> bool:
        return n <= self.sizes[-1]

    def _buffers(self, b: int):
        longs, ints = (torch.from_numpy(a).to(self.engine.device) for a in self._host([], [], [], b))
        return longs, ints, Batch.unpack([1] * b, [1] * b, longs, ints, max_ctx=self.max_ctx)

    def _capture(self, b: int) -> None:
        model = self.engine.model
        longs, ints, batch = self._buffers(b)
        attend = self.engine._attend(batch)
        with torch.inference_mode():
            for _ in range(2):  # warm up: Triton compiles, cuBLAS picks its kernels
                model.logits(model(batch.ids, batch.positions, attend))
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.mempool):
                logits = model.logits(model(batch.ids, batch.positions, attend))
        self.graphs[b] = (graph, logits, longs, ints)

    def _host(self, ids: list[int], ctx_lens: list[int], tables: list[list[int]], b: int):
        pad = b - len(ids)
        h = host_arrays([1] * b, ctx_lens + [1] * pad, tables + [[self.scratch]] * pad,
                        self.engine.pool.block_size, self.width)
        return pack(h, ids + [0] * pad)

    def run(self, ids: list[int], ctx_lens: list[int], tables: list[list[int]]) -> torch.Tensor:
        """Logits (n, vocab) of a decode step of n sequences: their next token ids, their context
        lengths with that token, their block tables."""
        n = len(ids)
        b = next(s for s in self.sizes if s >= n)
        graph, logits, longs, ints = self.graphs[b]
        host_longs, host_ints = self._host(ids, ctx_lens, tables, b)
        longs.copy_(torch.from_numpy(host_longs), non_blocking=True)
        ints.copy_(torch.from_numpy(host_ints), non_blocking=True)
        graph.replay()
        return logits[:n]
