"""Provenance of the prefix cache: after answering, the engine's KV blocks are written under the
store (`<store>/kv/`) and each block is recorded with the chunks its prefix was computed from, so
that `kb index` can drop the blocks of chunks that are gone. The cache is only a cache: a store
that takes no writes, or a disk that fills or refuses them, costs the cache, never the answer."""

from __future__ import annotations

import errno
from typing import Callable

from kb.index.store.kv import record_sources
from kb.rag.prompt import source_block
from kb.rag.sources import Source

# Write errors that cost the cache rather than the answer.
_CACHE_ONLY = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)


def spans(prompt: str, sources: list[Source], encode: Callable[[str], list[int]]) -> list[tuple[int, int]]:
    """(first token of a source in the prompt, a chunk id of it), for each source's chunks."""
    out = []
    for s in sources:
        head = prompt[:prompt.index(source_block(s.n, s.path, s.start_line, s.end_line, s.text, s.context))]
        out += [(len(encode(head)), c) for c in s.chunk_ids]
    return out


def keep(engine, sequences: list[tuple[list[int], list[tuple[int, int]]]]) -> None:
    """Persist `engine`'s prefix cache and record which chunks the blocks of each answered
    sequence hold; `sequences`: (prompt and answer token ids, `spans` of its prompt)."""
    try:
        engine.persist()
        record_sources(engine.disk_folder, engine.pool.block_size, sequences)
    except OSError as e:
        if e.errno not in _CACHE_ONLY:
            raise
