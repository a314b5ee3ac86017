"""The radix prefix cache: a tree over token ids whose nodes own KV blocks.

Each node holds at most one block's worth of tokens and the block with their keys and values; a
path from the root spells a cached prefix. Full blocks are found by exact lookup; a prompt that
agrees with a node on only its first tokens (a partial last block) gets those slots copied into a
fresh block of its own (copy-on-write), so shared blocks are never written. The tree holds one
reference to each of its blocks; a sequence using a prefix holds one more, so a block in use is
never freed. Under memory pressure, leaves that only the tree holds are evicted, least recently
used first, and written to the disk cache (when there is one) so that a later process can load
them back: on disk, a full block is keyed by a hash chain of all tokens up to its end.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from kb.common import ROOT_HASH, chain
from kb.rag.kv_cache import BlockPool, OutOfBlocks
from kb.rag.prefix_cache import DiskTier, Match


@dataclass(eq=False)
class Node:
    tokens: tuple[int, ...]
    block: int
    parent: "Node | None"
    digest: bytes  # hash chain of every token from the root through this node
    children: dict[tuple[int, ...], "Node"] = field(default_factory=dict)
    last_used: int = 0
    on_disk: bool = False


class RadixCache:
    """The prefix cache (kb.rag.prefix_cache.PrefixCache) as a radix tree over a block pool."""

    def __init__(self, pool: BlockPool, disk: DiskTier | None = None):
        self.pool, self.disk, self.bs = pool, disk, pool.block_size
        self.root = Node((), -1, None, ROOT_HASH)
        self._clock = itertools.count(1)
        self.blocks = 0  # blocks the tree holds

    # -- lookup -------------------------------------------------------------------------------
    def match_prefix(self, tokens: list[int]) -> Match:
        """Take the longest cached prefix of `tokens` for a new sequence (references are taken:
        give them back with `pool.release` when the sequence ends); full blocks missing in memory
        are loaded from the disk tier."""
        node, pos, out = self.root, 0, Match([], 0)
        now = next(self._clock)
        while pos < len(tokens):
            chunk = tuple(tokens[pos:pos + self.bs])
            child = node.children.get(chunk) if len(chunk) == self.bs else None
            if child is None and self.disk is not None and len(chunk) == self.bs:
                child = self._load(node, chunk)
                out.from_disk += self.bs if child else 0
            if child is None:
                self._partial(node, chunk, out, now)
                break
            child.last_used = now
            self.pool.ref(child.block)
            out.blocks.append(child.block)
            out.cached += self.bs
            node, pos = child, pos + self.bs
        self._touch(node, now)
        return out

    def cached(self, tokens: list[int]) -> int:
        """Tokens of `tokens` that full in-memory blocks hold, without taking them (for ordering)."""
        node, pos = self.root, 0
        while (node := node.children.get(tuple(tokens[pos:pos + self.bs]))) is not None:
            pos += self.bs
        return pos

    def _partial(self, node: Node, chunk: tuple[int, ...], out: Match, now: int) -> None:
        best, length = None, 0
        for child in node.children.values():
            n = common_prefix(child.tokens, chunk)
            if n > length:
                best, length = child, n
        if best is None:
            return
        self.pool.ref(best.block)  # kept from eviction while a block is found for the copy
        try:
            block = self._allocate()
        except OutOfBlocks:
            return
        finally:
            self.pool.release(best.block)
        self.pool.copy(best.block, block, length)
        best.last_used = now
        out.blocks.append(block)
        out.cached += length

    def _touch(self, node: Node, now: int) -> None:
        while node is not None:
            node.last_used = max(node.last_used, now)
            node = node.parent

    # -- insertion ----------------------------------------------------------------------------
    def insert_prefix(self, tokens: list[int], blocks: list[int]) -> None:
        """Remember the KV of `tokens`, held by a sequence in `blocks` (its block table)."""
        node, now = self.root, next(self._clock)
        for i in range(0, len(tokens), self.bs):
            chunk, block = tuple(tokens[i:i + self.bs]), blocks[i // self.bs]
            child = node.children.get(chunk)
            if child is None:
                for key, old in list(node.children.items()):  # a shorter partial of the same block
                    if old.block == block and not old.children:
                        del node.children[key]
                        self._drop(old)
                child = Node(chunk, block, node, chain(node.digest, chunk))
                node.children[chunk] = child
                self.pool.ref(block)
                self.blocks += 1
            child.last_used = now
            if len(chunk) < self.bs:
                break
            node = child

    # -- eviction and persistence ---------------------------------------------------------------
    def evictable(self) -> list[Node]:
        return [n for n in self._nodes() if not n.children and self.pool.refs[n.block] == 1]

    def evict(self, blocks: int) -> int:
        """Free up to `blocks` blocks, least recently used leaves first; returns how many."""
        freed = 0
        while freed < blocks:
            leaves = sorted(self.evictable(), key=lambda n: n.last_used)
            if not leaves:
                break
            for leaf in leaves[:blocks - freed]:
                self._remove(leaf)
                freed += 1
        return freed

    def persist(self) -> int:
        """Write every full block not yet on disk, then trim the disk tier to its size cap;
        returns how many were written."""
        if self.disk is None:
            return 0
        written = 0
        for node in self._nodes():
            if len(node.tokens) == self.bs and not node.on_disk:
                self._save(node)
                written += 1
        self.disk.trim()
        return written

    def _remove(self, node: Node) -> None:
        if self.disk is not None and len(node.tokens) == self.bs and not node.on_disk:
            self._save(node)
        del node.parent.children[node.tokens]
        self._drop(node)

    def _drop(self, node: Node) -> None:
        self.pool.release(node.block)
        self.blocks -= 1

    def _save(self, node: Node) -> None:
        k, v = self.pool.read(node.block, len(node.tokens))
        self.disk.save(node.digest, node.tokens, k, v)
        node.on_disk = True

    def _load(self, parent: Node, chunk: tuple[int, ...]) -> Node | None:
        digest = chain(parent.digest, chunk)
        kv = self.disk.load(digest, chunk)
        if kv is None:
            return None
        try:
            block = self._allocate()
        except OutOfBlocks:
            return None
        self.pool.write(block, *kv)
        node = Node(chunk, block, parent, digest, on_disk=True)
        parent.children[chunk] = node
        self.blocks += 1
        return node  # the tree's reference is the allocation's; match_prefix() adds the sequence's

    def _allocate(self) -> int:
        try:
            return self.pool.allocate()
        except OutOfBlocks:
            if self.evict(1):
                return self.pool.allocate()
            raise

    def _nodes(self):
        stack = list(self.root.children.values())
        while stack:
            node = stack.pop()
            stack.extend(node.children.values())
            yield node


def common_prefix(a, b) -> int:
    """How many leading items two token sequences share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
