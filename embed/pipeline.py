"""Feeding kb's packed encoder on a GPU: inputs are cut into batches of a token budget (similar
lengths together, so that few attention tiles are ragged), each batch is packed on the host into one
pinned int32 buffer (ids, positions, sequence starts, attention tiles) and copied with one
asynchronous transfer, and its vectors come back asynchronously: while the GPU runs batch i, the
host packs batch i + 1 and collects batch i - 1. Nothing here waits on the GPU except for results
two batches old, and a `PackedStream` keeps that going across calls (kb.index.gpu_feed).
"""

from __future__ import annotations

from collections import deque

import numpy as np

ATTENTION_TILE = 64  # BLOCK_M of kb.kernels.encoder.varlen_attention (PackedEncoder.attention)


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
         block_m: int = ATTENTION_TILE) -> tuple[np.ndarray, tuple]:
    """The model's inputs for texts' token ids (`head`, then the first `room` ids, then `tail`),
    packed into one int32 buffer [ids | positions | cu | tile sequence | tile first row]; and the
    five parts' lengths."""
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
    parts = (ids, positions, cu, tile_seq, tile_m)
    return np.concatenate(parts), tuple(len(p) for p in parts)


class PackedStream:
    """Batches of texts (token ids, see `pack`) through `enc`, a kb.embed.packed.PackedEncoder on
    `device`, with up to `depth` batches in flight: `submit` packs and launches a batch and hands
    back the vectors of those that are done, so a caller that keeps submitting keeps the GPU busy
    across calls; `drain` waits for the rest. Results are (tag, (n, dims) float32) in order."""

    def __init__(self, enc, head: list[int], tail: list[int], room: int, device, pooling: str,
                 normalize: bool, depth: int = 2):
        self.enc, self.room, self.device = enc, room, device
        self.head, self.tail = np.asarray(head, np.int32), np.asarray(tail, np.int32)
        self.pooling, self.normalize, self.depth = pooling, normalize, depth
        self._in_flight: deque = deque()

    def submit(self, seqs: list, tag) -> list[tuple[object, np.ndarray]]:
        import torch

        enc = self.enc
        with torch.inference_mode():
            buf, sizes = pack(seqs, self.head, self.tail, self.room, enc.pos_offset, enc.attention["block_m"])
            host_in = torch.from_numpy(buf).pin_memory()
            ids, positions, cu, tile_seq, tile_m = host_in.to(self.device, non_blocking=True).split(sizes)
            vec = enc.pool(enc.hidden(ids, positions, cu, (tile_seq, tile_m)), cu, self.pooling, self.normalize)
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
    lengths = np.fromiter((min(len(s), stream.room) for s in seqs), np.int64, len(seqs))
    done = []
    for idx in batches(lengths + len(stream.head) + len(stream.tail), budget):
        done += stream.submit([seqs[i] for i in idx.tolist()], idx)
    for idx, vectors in done + stream.drain():
        out[idx] = vectors
    return out
