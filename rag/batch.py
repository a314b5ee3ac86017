"""A step's batch for attention over the paged KV cache, and its packing for the device.

For each sequence of the step: how many new tokens it brings (its queries, back to back in the
flat token dimension), how long its context is once they are added, and its block table. The
index arrays are built on the host with numpy and copied to the device as two buffers (one of
int64, one of int32), whatever the batch; CUDA graphs (kb.rag.graphs) keep those buffers static.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Batch:
    q_lens: list[int]  # new tokens per sequence
    ctx_lens: list[int]  # cached + new tokens per sequence
    block_tables: torch.Tensor  # (seqs, max blocks) int32, padded with 0
    slots: torch.Tensor  # (tokens,) int64: where each new token's k and v go
    cu_q: torch.Tensor  # (seqs + 1,) int32: offsets of each sequence's queries
    ctx: torch.Tensor  # (seqs,) int32: ctx_lens on the device
    positions: torch.Tensor | None = None  # (tokens,) int64: each new token's position in its sequence
    ids: torch.Tensor | None = None  # (tokens,) int64: the new tokens, when given to `build`
    # A decode batch's shared prefixes (see `shared_prefixes`), or None: how many leading tokens
    # of each sequence the prefix pass covers, the sequences in groups, and the prefix tiles.
    skip: torch.Tensor | None = None  # (seqs,) int32
    members: torch.Tensor | None = None  # (seqs,) int32
    prefix_tiles: torch.Tensor | None = None  # (tiles, 4) int32
    _tiles: dict = field(default_factory=dict)
    _host: tuple | None = None  # `build`'s block tables and each sequence's block count, on the host
    _contiguous: bool | None = None

    @property
    def decode(self) -> bool:
        return all(n == 1 for n in self.q_lens)

    def tiles(self, size: int) -> torch.Tensor:
        """(2, tiles) int32 on the device: each tile of `size` queries' sequence and first query.
        Made once per batch, not once per layer."""
        if size not in self._tiles:
            seqs = np.repeat(np.arange(len(self.q_lens)), [-(-n // size) for n in self.q_lens])
            starts = np.concatenate([np.arange(0, n, size) for n in self.q_lens])
            self._tiles[size] = torch.from_numpy(np.stack([seqs, starts]).astype(np.int32)).to(self.cu_q.device)
        return self._tiles[size]

    def fixed_tiles(self, size: int, count: int) -> None:
        """Tiles of `size` queries fixed to `count` of them over one sequence (a CUDA graph's token
        bucket: the tiles past its real tokens do nothing)."""
        starts = torch.arange(0, count * size, size, dtype=torch.int32, device=self.cu_q.device)
        self._tiles[size] = torch.stack([torch.zeros_like(starts), starts])

    @classmethod
    def build(cls, q_lens: list[int], ctx_lens: list[int], tables: list[list[int]], block_size: int,
              device: torch.device, ids: list[int] | torch.Tensor | None = None, prefix_tile: int = 0) -> "Batch":
        """Two host-to-device copies (one of int64, one of int32 arrays), whatever the batch; ids
        already on the device (a step queued before its tokens reach the host: kb.rag.ahead) are
        copied there into their place. `prefix_tile`: for a decode batch, plan shared prefixes in
        tiles of that many sequences."""
        on_device = isinstance(ids, torch.Tensor)
        h = host_arrays(q_lens, ctx_lens, tables, block_size)
        if prefix_tile and all(n == 1 for n in q_lens):
            plan = shared_prefixes(h["tables"], h["ctx"], block_size, prefix_tile)
            if len(plan["prefix_tiles"]):
                h.update(plan)
        longs, ints = pack(h, [0] * len(ids) if on_device else ids)
        batch = cls.unpack(q_lens, ctx_lens, torch.from_numpy(longs).to(device), torch.from_numpy(ints).to(device),
                           prefix_tiles=len(h.get("prefix_tiles", ())))
        if on_device:
            batch.ids.copy_(ids)
        batch._host = (h["tables"], -(-np.asarray(ctx_lens) // block_size))
        return batch

    def contiguous(self) -> bool:
        """Whether every sequence's blocks are consecutive ids, so that attention can address its
        keys without gathering them (known for batches that `build` made; False for others)."""
        if self._contiguous is None:
            tables, counts = self._host or (None, ())
            self._contiguous = tables is not None and all(
                np.array_equal(row[:n], row[0] + np.arange(n, dtype=row.dtype)) for row, n in zip(tables, counts))
        return self._contiguous

    @classmethod
    def unpack(cls, q_lens: list[int], ctx_lens: list[int], longs: torch.Tensor, ints: torch.Tensor,
               prefix_tiles: int = 0) -> "Batch":
        """A batch whose tensors are views of the two buffers `pack` lays out (on the device);
        `prefix_tiles`: how many shared-prefix tiles the int32 buffer ends with (0: none, and no
        shared-prefix arrays)."""
        n, t = len(q_lens), sum(q_lens)
        prefix = {}
        if prefix_tiles:
            tail = ints[len(ints) - 2 * n - 4 * prefix_tiles:]
            ints = ints[:len(ints) - len(tail)]
            prefix = dict(skip=tail[:n], members=tail[n:2 * n], prefix_tiles=tail[2 * n:].view(prefix_tiles, 4))
        return cls(q_lens, ctx_lens, ints[2 * n + 1:].view(n, -1), longs[:t], ints[:n + 1], ints[n + 1:2 * n + 1],
                   positions=longs[t:2 * t], ids=longs[2 * t:] if len(longs) > 2 * t else None,
                   **prefix)


def pack(h: dict[str, np.ndarray], ids: list[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """`host_arrays` (and the new token ids) as two buffers: int64 [slots | positions | ids] and
    int32 [query offsets | context lengths | block tables | shared prefixes, if planned];
    `Batch.unpack` reads them back."""
    longs = [h["slots"], h["positions"]] + ([np.asarray(ids, dtype=np.int64)] if ids is not None else [])
    ints = [h["cu_q"], h["ctx"], h["tables"].ravel()]
    if "prefix_tiles" in h:
        ints += [h["skip"], h["members"], h["prefix_tiles"].ravel()]
    return np.concatenate(longs), np.concatenate(ints)


def shared_prefixes(tables: np.ndarray, ctx: np.ndarray, block_size: int, tile: int,
                    max_tiles: int | None = None) -> dict[str, np.ndarray]:
    """Groups of a decode batch's sequences whose block tables begin with the same blocks: the
    prefix the radix cache shares among them (those blocks are full and never written again).
    Decode attention then reads each shared prefix once for its whole group, in tiles of up to
    `tile` sequences, instead of once per sequence (cascade attention), and each sequence's own
    pass starts after it. Returns `skip` (seqs,): leading tokens the prefix pass covers (0: none);
    `members` (seqs,): the grouped sequences back to back; `prefix_tiles` (tiles, 4): each tile's
    first index into `members`, its number of sequences, its prefix length in tokens, and a
    sequence whose table has the prefix's blocks. With `max_tiles`, the largest groups are taken
    until the tiles run out, and the tiles are padded to that count with empty ones."""
    n = len(ctx)
    skip, members, tiles = np.zeros(n, np.int32), np.zeros(n, np.int32), []
    whole = (ctx.astype(np.int64) - 1) // block_size  # blocks wholly before each sequence's new token
    _, group, counts = np.unique(tables[:, 0], return_inverse=True, return_counts=True)
    at = 0
    for g in np.argsort(-counts, kind="stable"):
        if counts[g] < 2:
            break
        idx = np.flatnonzero(group == g)
        shared = int(whole[idx].min())
        if shared < 1:
            continue
        rows = tables[idx, :shared]
        same = (rows == rows[0]).all(0)
        shared = shared if same.all() else int(same.argmin())
        need = -(-len(idx) // tile)
        if shared < 1 or (max_tiles is not None and len(tiles) + need > max_tiles):
            continue
        skip[idx] = shared * block_size
        members[at:at + len(idx)] = idx
        tiles += [(at + s, min(tile, len(idx) - s), shared * block_size, idx[0]) for s in range(0, len(idx), tile)]
        at += len(idx)
    tiles += [(0, 0, 0, 0)] * ((max_tiles or 0) - len(tiles))
    return {"skip": skip, "members": members, "prefix_tiles": np.asarray(tiles, np.int32).reshape(-1, 4)}


def host_arrays(q_lens: list[int], ctx_lens: list[int], tables: list[list[int]], block_size: int,
                width: int = 0) -> dict[str, np.ndarray]:
    """A batch's index arrays built on the host with numpy (then copied to the device at once):
    slots and positions of each new token, query offsets, context lengths, block tables."""
    n = len(q_lens)
    table = np.zeros((n, width or max(len(t) for t in tables)), dtype=np.int32)
    for i, t in enumerate(tables):
        table[i, :len(t)] = t
    q = np.asarray(q_lens, dtype=np.int64)
    ctx = np.asarray(ctx_lens, dtype=np.int64)
    cu = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(q, out=cu[1:])
    seq = np.repeat(np.arange(n), q)
    pos = np.arange(cu[-1], dtype=np.int64) - np.repeat(cu[:-1], q) + np.repeat(ctx - q, q)
    slots = table[seq, pos // block_size].astype(np.int64) * block_size + pos % block_size
    return {"slots": slots, "positions": pos, "cu_q": cu, "ctx": ctx.astype(np.int32), "tables": table}
