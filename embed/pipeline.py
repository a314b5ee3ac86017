"""Feeding kb's packed encoder on a GPU: inputs are cut into batches of a token budget (similar
lengths together, so that few attention tiles are ragged), each batch is packed on the host into one
pinned int32 buffer (ids, positions, sequence starts, attention tiles) and copied with one
asynchronous transfer, and its vectors come back asynchronously: while the GPU runs batch i, the
host packs batch i + 1 and collects batch i - 1. Nothing here waits on the GPU except for results
two batches old, and a `PackedStream` keeps that going across calls (kb.embed.feed).
"""

from __future__ import annotations

from collections import deque

import numpy as np

ATTENTION_TILE = 64  # BLOCK_M of kb.kernels.encoder_layers.varlen_attention (PackedEncoder.attention)


def batches(lengths: np.ndarray, budget: int) -> list[np.ndarray]:
    """Indices of the inputs in batches of at most `budget` tokens (or one longer input), by length."""
    order = np.argsort(lengths, kind="stable")
    out, start, used = [], 0, 0
    for i, n in enumerate(lengths[order].tolist()):
        if used + n > budget and i > start:
            out.append(order[start:i])
            start, used = i, 0
        used += n
    if start < len(order):
        out.append(order[start:])
    return out


def pack(seqs: list, head: np.ndarray, tail: np.ndarray, room: int, pos_offset: int,
         block_m: int = ATTENTION_TILE, shape: tuple[int, int, int] | None = None) -> tuple[np.ndarray, tuple]:
    """The model's inputs for texts' token ids (`head`, then the first `room` ids, then `tail`),
    packed into one int32 buffer [ids | positions | cu | tile sequence | tile first row]; and the
    five parts' lengths. With `shape` (tokens, sequences, tiles) the parts are padded to that size
    (see `padded_shape`), so that one captured CUDA graph runs any batch that fits: padding tokens
    belong to no sequence, padding sequences are empty and padding tiles have sequence -1."""
    body = [np.asarray(s, np.int32)[:room] for s in seqs]
    body_len = np.fromiter(map(len, body), np.int32, len(body))
    lengths = body_len + len(head) + len(tail)
    cu = np.zeros(len(seqs) + 1, np.int32)
    np.cumsum(lengths, out=cu[1:])
    starts = cu[:-1]
    ids = np.empty(cu[-1], np.int32)
    body_start = np.zeros(len(seqs), np.int32)
    np.cumsum(body_len[:-1], out=body_start[1:])
    ids[np.arange(body_len.sum(), dtype=np.int32) + np.repeat(starts + len(head) - body_start, body_len)] = \
        np.concatenate(body) if body else []
    for j, t in enumerate(head.tolist()):
        ids[starts + j] = t
    for j, t in enumerate(tail.tolist()):
        ids[starts + len(head) + body_len + j] = t
    positions = np.arange(cu[-1], dtype=np.int32) - np.repeat(starts, lengths) + pos_offset
    tiles = (lengths + block_m - 1) // block_m
    first = np.zeros(len(seqs) + 1, np.int32)
    np.cumsum(tiles, out=first[1:])
    tile_seq = np.repeat(np.arange(len(seqs), dtype=np.int32), tiles)
    tile_m = (np.arange(first[-1], dtype=np.int32) - np.repeat(first[:-1], tiles)) * block_m
    parts = [ids, positions, cu, tile_seq, tile_m]
    if shape is not None:
        tokens, n_seqs, n_tiles = shape
        fill = (0, pos_offset, cu[-1], -1, 0)
        sizes = (tokens, tokens, n_seqs + 1, n_tiles, n_tiles)
        if any(len(p) > n for p, n in zip(parts, sizes)):
            raise ValueError(f"a batch of {cu[-1]} tokens, {len(seqs)} texts does not fit {shape}")
        parts = [np.concatenate((p, np.full(n - len(p), f, np.int32))) for p, n, f in zip(parts, sizes, fill)]
    return np.concatenate(parts), tuple(len(p) for p in parts)


def padded_shape(tokens: int, block_m: int) -> tuple[int, int, int]:
    """The (tokens, sequences, tiles) that batches of up to `tokens` tokens are padded to, so that
    one captured CUDA graph runs them all: room for texts of 64 tokens on average (a batch of
    shorter ones runs eagerly); a text of n tokens has ceil(n / block_m) attention tiles, so there
    are at most sequences + tokens / block_m. Padding programs return at once."""
    seqs = max(16, tokens // 64)
    return tokens, seqs, seqs - (-tokens // block_m)


class PackedStream:
    """Batches of texts (token ids, see `pack`) through `enc`, a kb.embed.packed.PackedEncoder on
    `device`, with up to `depth` batches in flight: `submit` packs and launches a batch and hands
    back the vectors of those that are done, so a caller that keeps submitting keeps the GPU busy
    across calls; `drain` waits for the rest. Results are (tag, (n, dims) float32) in order.

    With `graph_tokens`, a batch of at least half that many tokens (and no more, and no more texts
    than `padded_shape` has room for) is padded to that shape and run by replaying a CUDA graph
    captured on first use: one launch instead of some 7 per layer, so the thread feeding the GPU
    holds the GIL for microseconds per batch, not milliseconds, while `kb index`'s main thread
    writes. Other batches run eagerly."""

    def __init__(self, enc, head: list[int], tail: list[int], room: int, device, pooling: str,
                 normalize: bool, depth: int = 2, graph_tokens: int | None = None):
        self.enc, self.room, self.device = enc, room, device
        self.head, self.tail = np.asarray(head, np.int32), np.asarray(tail, np.int32)
        self.pooling, self.normalize, self.depth = pooling, normalize, depth
        self.shape = padded_shape(graph_tokens, enc.attention["block_m"]) if graph_tokens else None
        self.graph: tuple | None = None  # (graph, its input, its output), once captured
        self.replays = 0
        self._in_flight: deque = deque()

    def tokens(self, seq) -> int:
        """The tokens the model reads for a text's ids."""
        return min(len(seq), self.room) + len(self.head) + len(self.tail)

    def _forward(self, buf, sizes):
        ids, positions, cu, tile_seq, tile_m = buf.split(sizes)
        enc = self.enc
        return enc.pool(enc.hidden(ids, positions, cu, (tile_seq, tile_m)), cu, self.pooling, self.normalize)

    def _capture(self, sizes: tuple) -> tuple | None:
        """The graph of `self.shape`, after one eager run that compiles the kernels for it; None,
        and eager batches from then on, if capture fails."""
        import torch

        try:
            static_in = torch.zeros(sum(sizes), dtype=torch.int32, device=self.device)
            static_in[sum(sizes[:3]):sum(sizes[:4])] = -1  # no tile has a sequence: the warm-up reads nothing
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.stream(side):
                self._forward(static_in, sizes)
                side.synchronize()
                # torch.cuda.graph() without its gc.collect() and empty_cache(): a run captures once
                graph.capture_begin(capture_error_mode="thread_local")
                try:
                    static_out = self._forward(static_in, sizes)
                finally:
                    graph.capture_end()
            torch.cuda.current_stream(self.device).wait_stream(side)
            self.graph = (graph, static_in, static_out)
        except RuntimeError:
            self.shape = None
        return self.graph

    def submit(self, seqs: list, tag) -> list[tuple[object, np.ndarray]]:
        import torch

        enc, block_m = self.enc, self.enc.attention["block_m"]
        with torch.inference_mode():
            shape = self.shape
            if shape and not (shape[0] // 2 <= sum(map(self.tokens, seqs)) <= shape[0] and len(seqs) <= shape[1]):
                shape = None
            buf, sizes = pack(seqs, self.head, self.tail, self.room, enc.pos_offset, block_m, shape)
            host_in = torch.from_numpy(buf).pin_memory()
            graph = (self.graph or self._capture(sizes)) if shape else None
            if graph is None:
                vec = self._forward(host_in.to(self.device, non_blocking=True), sizes)
            else:  # stream order: the copy in waits for the last replay, the next replay for the copy out
                graph[1].copy_(host_in, non_blocking=True)
                graph[0].replay()
                self.replays += 1
                vec = graph[2][:len(seqs)]
            host_out = torch.empty(vec.shape, dtype=torch.float32, pin_memory=True)
            host_out.copy_(vec, non_blocking=True)
            done = torch.cuda.Event(blocking=True)  # its waiter sleeps: the cores are the readers'
            done.record()
        self._in_flight.append((tag, host_out, done, host_in))  # host_in lives until its copy is done
        return [self._collect() for _ in range(len(self._in_flight) - self.depth)]

    def drain(self) -> list[tuple[object, np.ndarray]]:
        return [self._collect() for _ in range(len(self._in_flight))]

    def _collect(self) -> tuple[object, np.ndarray]:
        tag, host, done, _ = self._in_flight.popleft()
        done.synchronize()
        return tag, host.numpy()


def embed_packed(stream: PackedStream, seqs: list, budget: int) -> np.ndarray:
    """(n, dims) float32 vectors of texts given as token ids through `stream`, in batches of
    `budget` tokens."""
    out = np.empty((len(seqs), stream.enc.word.shape[1]), dtype=np.float32)
    done = []
    for idx in batches(np.fromiter(map(stream.tokens, seqs), np.int64, len(seqs)), budget):
        done += stream.submit([seqs[i] for i in idx.tolist()], idx)
    for idx, vectors in done + stream.drain():
        out[idx] = vectors
    return out
