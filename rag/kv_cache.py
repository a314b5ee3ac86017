"""The paged KV cache: fixed-size blocks of keys and values for every layer, a free list and a
reference count per block. A sequence holds its blocks through a block table; the prefix cache
holds the blocks it remembers; a block returns to the free list when nobody holds it.

Layout: k and v are (layers, blocks, block_size, kv_heads, head_dim), so one block of one layer
is contiguous and a token's slot is block * block_size + offset.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CacheConfig:
    block_size: int = 16
    num_blocks: int | None = None  # None: sized from memory (`memory_fraction` of what is free)
    memory_fraction: float = 0.9  # of the GPU's free memory; on the CPU, of `cpu_bytes`
    cpu_bytes: int = 2 * 2**30


def block_bytes(num_layers: int, block_size: int, kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
    return 2 * num_layers * block_size * kv_heads * head_dim * torch.empty(0, dtype=dtype).element_size()


def blocks_that_fit(cfg: CacheConfig, per_block: int, device: torch.device) -> int:
    if cfg.num_blocks is not None:
        return cfg.num_blocks
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = free * cfg.memory_fraction
    else:
        budget = cfg.cpu_bytes * cfg.memory_fraction
    return max(int(budget // per_block), 2)


class OutOfBlocks(Exception):
    """No free block: the caller evicts from the prefix cache or preempts a sequence."""


class BlockPool:
    def __init__(self, num_layers: int, num_blocks: int, block_size: int, kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device):
        shape = (num_layers, num_blocks, block_size, kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.block_size, self.num_blocks = block_size, num_blocks
        self.refs = [0] * num_blocks
        # a heap: the lowest free id goes first, so a long prompt's blocks come as one run where
        # the pool has one, and attention reads them without a gather (kb.rag.batch.Batch.contiguous)
        self.free: list[int] = list(range(num_blocks))
        self.peak_used = 0  # the most blocks held at once (sequences and the prefix cache)

    @property
    def num_free(self) -> int:
        return len(self.free)

    def allocate(self) -> int:
        if not self.free:
            raise OutOfBlocks
        block = heapq.heappop(self.free)
        assert self.refs[block] == 0
        self.refs[block] = 1
        self.peak_used = max(self.peak_used, self.num_blocks - len(self.free))
        return block

    def ref(self, block: int) -> None:
        assert self.refs[block] > 0, "a free block cannot be shared"
        self.refs[block] += 1

    def release(self, block: int) -> None:
        assert self.refs[block] > 0, f"block {block} released more often than held"
        self.refs[block] -= 1
        if self.refs[block] == 0:
            heapq.heappush(self.free, block)

    def copy(self, src: int, dst: int, tokens: int) -> None:
        """Copy the first `tokens` slots of block `src` into `dst` (copy-on-write of a shared block)."""
        self.k[:, dst, :tokens] = self.k[:, src, :tokens]
        self.v[:, dst, :tokens] = self.v[:, src, :tokens]

    def read(self, block: int, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(k, v) of a block's first `tokens` slots, all layers, on the CPU (for the disk cache)."""
        return self.k[:, block, :tokens].cpu(), self.v[:, block, :tokens].cpu()

    def write(self, block: int, k: torch.Tensor, v: torch.Tensor) -> None:
        n = k.shape[1]
        self.k[:, block, :n] = k.to(self.k.device, self.k.dtype)
        self.v[:, block, :n] = v.to(self.v.device, self.v.dtype)
