"""The prefix cache's interface: what the scheduler and the engine ask of it, whatever holds the
prefixes. kb's implementation is the radix tree (kb.rag.radix.RadixCache), with a disk tier
(kb.rag.disk_cache.DiskCache) under it for blocks that outlive the process.

References are the locks: `match_prefix` takes one reference on each block it hands out (in the
KV pool, kb.rag.kv_cache.BlockPool), and the sequence gives them back with `pool.release` when it
ends; `insert_prefix` takes the cache's own reference. A block someone holds is never evicted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class Match:
    blocks: list[int]  # the sequence's first blocks: shared full blocks, then its copy of a partial one
    cached: int  # tokens whose keys and values these blocks already hold
    from_disk: int = 0  # of them, tokens loaded from the disk tier


class DiskTier(Protocol):
    """Full blocks on disk, keyed by the hash chain of every token up to the block's end."""

    folder: object  # where the blocks lie (kb ask records their sources beside them)

    def save(self, digest: bytes, tokens: tuple[int, ...], k: torch.Tensor, v: torch.Tensor) -> None: ...

    def load(self, digest: bytes, tokens: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor] | None: ...

    def trim(self) -> int: ...


class PrefixCache(Protocol):
    disk: DiskTier | None

    def match_prefix(self, tokens: list[int]) -> Match:
        """Take the longest cached prefix of `tokens` for a new sequence (its blocks referenced)."""

    def cached(self, tokens: list[int]) -> int:
        """How many leading tokens of `tokens` are cached in memory, taking nothing (for ordering)."""

    def insert_prefix(self, tokens: list[int], blocks: list[int]) -> None:
        """Remember the KV of `tokens`, which a sequence holds in `blocks` (its block table)."""

    def evict(self, blocks: int) -> int:
        """Free up to `blocks` blocks nobody else holds; returns how many were freed."""

    def persist(self) -> int:
        """Write what is not yet on the disk tier there (then trim it); returns the blocks written."""
