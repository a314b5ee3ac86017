"""CUDA graphs for the generator's steps, so that a step is two host-to-device copies (and, for a
step queued before its tokens reach the host, a copy of them on the device) and a replay instead
of a few hundred kernel launches from Python (a small model's step is launch-bound).

- Decode: one graph per batch size in BATCH_SIZES, captured when the model runner starts. A step of n
  sequences replays the smallest graph of at least n, its spare rows pointed at a scratch block
  so that their writes touch nothing real. The decode kernel's grid depends on the batch size
  alone (it splits each sequence's own context), so a replay is valid for any context length.
- Prefill of one sequence (a question's prompt, or a chunk of a long one): one graph per token
  bucket in PREFILL_TOKENS, captured the first time a prompt of that size comes (its first run
  is eager). n new tokens replay the smallest bucket of at least n; the padding tokens write
  their keys to the scratch block, belong to no sequence (attention skips them) and their rows
  of the output are never read.

Each graph owns its input buffers: one int64 buffer (slots, positions, token ids) and one int32
buffer (query offsets, context lengths, block tables), laid out by kb.rag.batch.pack. The graphs
belong to the model runner (kb.rag.runner) and capture its forward.
"""

from __future__ import annotations

import numpy as np
import torch

from kb.rag.batch import Batch, host_arrays, pack, shared_prefixes

BATCH_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
PREFILL_TOKENS = (32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 2560, 3072, 4096)


class StepGraphs:
    def __init__(self, runner):
        """Capture the decode graphs of `runner` (a kb.rag.runner.ModelRunner with the Triton
        backend on a CUDA device): its model, pool and attention."""
        self.runner = runner
        pool = runner.pool
        self.sizes = [b for b in BATCH_SIZES if b <= runner.cfg.max_seqs]
        self.buckets = [t for t in PREFILL_TOKENS if t <= runner.token_budget]
        self.max_ctx = min(runner.model.cfg.max_positions, pool.num_blocks * pool.block_size)
        self.width = (self.max_ctx + pool.block_size - 1) // pool.block_size
        self.scratch = pool.allocate()  # padding writes here
        self.decode_graphs: dict[int, tuple] = {}
        self.prefill_graphs: dict[int, tuple] = {}
        self.mempool = torch.cuda.graph_pool_handle()
        for b in reversed(self.sizes):  # largest first, so smaller ones reuse its memory
            self.decode_graphs[b] = self._capture(*self._decode_inputs([], [], [], b), logits=True)

    # -- decode ---------------------------------------------------------------------------------
    def fits(self, n: int) -> bool:
        return n <= self.sizes[-1]

    def decode(self, ids: list[int] | torch.Tensor, ctx_lens: list[int], tables: list[list[int]]) -> torch.Tensor:
        """Logits (n, vocab) of a decode step of n sequences: their next token ids (or a tensor of
        them on the device, for a step queued before they reach the host: kb.rag.ahead), their
        context lengths with that token, their block tables."""
        n = len(ids)
        b = next(s for s in self.sizes if s >= n)
        graph, logits, longs, ints, _ = self.decode_graphs[b]
        on_device = isinstance(ids, torch.Tensor)
        host_longs, host_ints, _ = self._decode_inputs([0] * n if on_device else ids, ctx_lens, tables, b)
        longs.copy_(torch.from_numpy(host_longs), non_blocking=True)
        ints.copy_(torch.from_numpy(host_ints), non_blocking=True)
        if on_device:  # the ids' place in the int64 buffer (kb.rag.batch.pack: slots, positions, ids)
            longs[2 * b:2 * b + n].copy_(ids)
        graph.replay()
        return logits[:n]

    def _decode_inputs(self, ids, ctx_lens, tables, b: int):
        pad, bs = b - len(ids), self.runner.pool.block_size
        h = host_arrays([1] * b, ctx_lens + [1] * pad, tables + [[self.scratch]] * pad, bs, self.width)
        tile = self.runner.prefix_tile
        tiles = -(-b // tile) + 2 if tile and b >= 4 else 0  # a fixed grid for the shared-prefix pass
        if tiles:
            h.update(shared_prefixes(h["tables"], h["ctx"], bs, tile, max_tiles=tiles))
        longs, ints = pack(h, ids + [0] * pad)
        return longs, ints, lambda lo, it: Batch.unpack([1] * b, [1] * b, lo, it, prefix_tiles=tiles)

    # -- prefill of one sequence ----------------------------------------------------------------
    def prefill_fits(self, n: int) -> bool:
        return 1 < n <= (self.buckets[-1] if self.buckets else 0)

    def prefill(self, ids: list[int], ctx_len: int, table: list[int]) -> torch.Tensor:
        """Hidden states (n, hidden) of n new tokens of one sequence, whose context is `ctx_len`
        tokens with them, its blocks `table`. The first prompt of a bucket runs eagerly and
        captures that bucket's graph."""
        n = len(ids)
        b = next(t for t in self.buckets if t >= n)
        longs, ints, make = self._prefill_inputs(ids, ctx_len, table, b)
        if b not in self.prefill_graphs:
            self.prefill_graphs[b] = self._capture(longs, ints, make, logits=False)
        graph, hidden, dev_longs, dev_ints, _ = self.prefill_graphs[b]
        dev_longs.copy_(torch.from_numpy(longs), non_blocking=True)
        dev_ints.copy_(torch.from_numpy(ints), non_blocking=True)
        graph.replay()
        return hidden[:n]

    def _prefill_inputs(self, ids, ctx_len: int, table, b: int):
        n, bs = len(ids), self.runner.pool.block_size
        h = host_arrays([n], [ctx_len], [table], bs, self.width)
        pad = b - n
        h["slots"] = np.concatenate([h["slots"], np.full(pad, self.scratch * bs, dtype=np.int64)])
        h["positions"] = np.concatenate([h["positions"], np.zeros(pad, dtype=np.int64)])
        longs, ints = pack(h, list(ids) + [0] * pad)
        size = self.runner.attention.extend_tile

        def make(lo, it):
            batch = Batch.unpack([b], [ctx_len], lo, it)
            batch.fixed_tiles(size, -(-b // size))  # every tile of the bucket, fixed for the graph
            return batch
        return longs, ints, make

    # -- capture --------------------------------------------------------------------------------
    def _capture(self, host_longs, host_ints, make, logits: bool):
        """Capture a forward over static buffers first filled with these inputs (a warm-up run
        computes them for real: Triton compiles, cuBLAS picks its kernels)."""
        runner, dev = self.runner, self.runner.device
        longs, ints = torch.from_numpy(host_longs).to(dev), torch.from_numpy(host_ints).to(dev)
        batch = make(longs, ints)

        def forward():
            hidden = runner.forward(batch)
            return runner.model.logits(hidden) if logits else hidden
        with torch.inference_mode():
            forward()
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.mempool):
                out = forward()
        return graph, out, longs, ints, batch
