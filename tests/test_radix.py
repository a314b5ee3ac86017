"""The radix prefix cache on CPU tensors: hits, partial hits with copy-on-write, reference counts,
eviction order and the disk round trip."""

import torch

from kb.rag.disk_cache import DiskCache
from kb.rag.kv_cache import BlockPool, OutOfBlocks
from kb.rag.radix import RadixCache

BS = 4


def make(blocks=16, disk=None):
    pool = BlockPool(num_layers=2, num_blocks=blocks, block_size=BS, kv_heads=1, head_dim=2,
                     dtype=torch.float32, device=torch.device("cpu"))
    return pool, RadixCache(pool, disk)


def sequence(pool, radix, tokens):
    """What the engine does for one prompt: match, allocate the rest, compute (here: write a
    recognisable value per token: k = id in layer 0, -id in layer 1, v = id + 0.5), insert."""
    m = radix.match_prefix(tokens)
    blocks = list(m.blocks)
    while len(blocks) * BS < len(tokens):
        blocks.append(pool.allocate())
    for i in range(m.cached, len(tokens)):
        b, o = blocks[i // BS], i % BS
        pool.k[0, b, o], pool.k[1, b, o], pool.v[:, b, o] = tokens[i], -tokens[i], tokens[i] + 0.5
    radix.insert_prefix(tokens, blocks)
    return m, blocks


def release(pool, blocks):
    for b in blocks:
        pool.release(b)


def assert_kv(pool, tokens, blocks):
    for i, t in enumerate(tokens):
        b, o = blocks[i // BS], i % BS
        assert pool.k[0, b, o, 0, 0] == t and pool.k[1, b, o, 0, 0] == -t and pool.v[0, b, o, 0, 0] == t + 0.5


def test_full_hit_shares_blocks_and_counts_references():
    pool, radix = make()
    tokens = list(range(1, 11))  # 2 full blocks + 2 tokens
    m, blocks = sequence(pool, radix, tokens)
    assert m.cached == 0 and radix.blocks == 3
    release(pool, blocks)
    assert all(pool.refs[b] == 1 for b in blocks)  # the tree still holds them
    m2 = radix.match_prefix(tokens[:8] + [99, 98])
    assert m2.cached == 8 and m2.blocks == blocks[:2]
    assert pool.refs[blocks[0]] == 2
    assert_kv(pool, tokens[:8], m2.blocks)
    release(pool, m2.blocks)


def test_partial_block_is_copied_not_shared():
    pool, radix = make()
    tokens = list(range(1, 11))
    _, blocks = sequence(pool, radix, tokens)
    release(pool, blocks)
    m = radix.match_prefix(tokens[:6] + [77, 78])  # agrees with the second block on 2 of its tokens
    assert m.cached == 6
    assert m.blocks[0] == blocks[0] and m.blocks[1] not in blocks  # a private copy
    assert_kv(pool, tokens[:6], m.blocks)
    pool.k[0, m.blocks[1], 2] = 1000  # the new sequence writes its own tokens ...
    assert pool.k[0, blocks[1], 2, 0, 0] == 7  # ... and the cached block is untouched
    # the partial tail (2 tokens in the third block) is matched too
    m2 = radix.match_prefix(tokens)
    assert m2.cached == 10
    release(pool, m.blocks + m2.blocks)


def test_block_in_use_is_never_evicted_or_freed():
    pool, radix = make(blocks=6)
    _, a = sequence(pool, radix, list(range(1, 9)))  # 2 blocks, still held by the sequence
    _, b = sequence(pool, radix, list(range(50, 58)))
    release(pool, b)
    assert radix.evict(10) == 2  # only b's blocks could go
    assert all(pool.refs[x] == 2 for x in a)
    assert radix.match_prefix(list(range(1, 9))).cached == 8  # a is still cached


def test_eviction_is_least_recently_used_leaves_first():
    pool, radix = make(blocks=12)
    seqs = [[s * 100 + i for i in range(8)] for s in range(1, 4)]
    for tokens in seqs:
        release(pool, sequence(pool, radix, tokens)[1])
    release(pool, radix.match_prefix(seqs[0]).blocks)  # touch the first: now the third... then second is oldest
    assert radix.evict(1) == 1
    m = radix.match_prefix(seqs[1][:8] + [0])
    assert m.cached == 4  # the second lost its leaf first
    m0, m2 = radix.match_prefix(seqs[0]), radix.match_prefix(seqs[2])
    assert m0.cached == 8 and m2.cached == 8
    release(pool, m.blocks + m0.blocks + m2.blocks)
    assert radix.evict(100) == 5
    assert radix.blocks == 0 and pool.num_free == 12


def test_out_of_blocks_is_reported():
    pool, _ = make(blocks=2)
    pool.allocate(), pool.allocate()
    try:
        pool.allocate()
        raise AssertionError("expected OutOfBlocks")
    except OutOfBlocks:
        pass


def test_disk_round_trip_in_a_fresh_cache(tmp_path):
    pool, radix = make(disk=DiskCache(tmp_path, "model-a"))
    tokens = list(range(1, 14))  # 3 full blocks + 1
    release(pool, sequence(pool, radix, tokens)[1])
    assert radix.persist() == 3  # full blocks only
    pool2, radix2 = make(disk=DiskCache(tmp_path, "model-a"))  # a new process
    m = radix2.match_prefix(tokens)
    assert m.cached == 12 and m.from_disk == 12
    assert_kv(pool2, tokens[:12], m.blocks)
    other = RadixCache(make()[0], DiskCache(tmp_path, "model-b"))  # another model never reads them
    assert other.match_prefix(tokens).cached == 0


def test_damaged_disk_block_is_computed_again(tmp_path):
    from conftest import damage

    disk = DiskCache(tmp_path, "model-a")
    k = v = torch.arange(4 * 2 * 8, dtype=torch.float32).reshape(4, 2, 8)
    disk.save(b"\x01" * 16, (1, 2, 3, 4), k, v)
    assert disk.load(b"\x01" * 16, (1, 2, 3, 4)) is not None
    damage(disk._path(b"\x01" * 16))  # a member fails its CRC: a miss, not an error
    assert disk.load(b"\x01" * 16, (1, 2, 3, 4)) is None


def test_disk_trim_keeps_the_cap_and_the_most_recent_blocks(tmp_path):
    import os

    k = v = torch.zeros(4, 2, 8)
    disk = DiskCache(tmp_path, "m")
    disk.save(bytes([0]) * 16, (0,), k, v)
    size = disk._path(bytes([0]) * 16).stat().st_size
    disk.max_bytes = 3 * size
    assert disk.trim() == 0  # the first call scans the folder
    for i in range(1, 6):
        disk.save(bytes([i]) * 16, (i,), k, v)
        os.utime(disk._path(bytes([i]) * 16), (1000 + i, 1000 + i))  # saved in this order
    os.utime(disk._path(bytes([0]) * 16), (999, 999))
    assert disk.trim() == 3  # over the cap by what it wrote: scanned again, the oldest removed
    assert sorted(p.stem[:2] for p in tmp_path.glob("m/*/*.npz")) == ["03", "04", "05"]
    assert disk.trim() == 0 and DiskCache(tmp_path, "m", 3 * size).trim() == 0  # a new process agrees


def test_evicted_blocks_are_written_to_disk(tmp_path):
    pool, radix = make(blocks=4, disk=DiskCache(tmp_path, "m"))
    tokens = list(range(1, 9))
    release(pool, sequence(pool, radix, tokens)[1])
    assert radix.evict(2) == 2
    assert radix.match_prefix(tokens).from_disk == 8


def test_scheduler_waits_for_a_shared_prefill_but_not_for_a_cached_one():
    """Requests sharing an uncached prefix: one prefills it, the others wait for the cache. Once
    it is cached, every request with its own suffix is admitted in the same step."""
    from kb.rag.sampling import SamplingParams
    from kb.rag.scheduler import Scheduler, Sequence

    pool, radix = make(blocks=64)
    sched = Scheduler(pool, radix, token_budget=1000, max_seqs=16)
    shared = list(range(100, 124))  # 6 blocks
    seqs = [Sequence(i, shared + [200 + i] * 9, 33, SamplingParams(max_tokens=2)) for i in range(4)]
    for s in seqs:
        sched.add(s)
    plan = sched.schedule()
    assert [s.id for s, _ in plan] == [0]  # the others share its 24 uncached tokens
    first, n = plan[0]
    first.computed += n
    sched.prefilled(first)  # its prompt is in the cache now
    plan = sched.schedule()
    admitted = {s.id: n for s, n in plan}
    assert set(admitted) == {1, 2, 3}  # all in one step, not one per step
    assert all(s.cached == 24 and admitted[s.id] == 9 for s in seqs[1:])


def test_a_lone_prompt_prefills_in_long_chunks_and_others_in_the_budget():
    """A prompt with nothing else running or waiting takes chunks of up to `long_chunk`; once
    another request arrives, each step holds the token budget again."""
    from kb.rag.sampling import SamplingParams
    from kb.rag.scheduler import Scheduler, Sequence

    pool, radix = make(blocks=64)
    sched = Scheduler(pool, radix, token_budget=8, max_seqs=4, long_chunk=40)
    lone = Sequence(0, list(range(100, 200)), 100, SamplingParams(max_tokens=2))
    sched.add(lone)
    (seq, n), = sched.schedule()
    assert n == 40
    seq.computed += n
    sched.add(Sequence(1, list(range(300, 310)), 10, SamplingParams(max_tokens=2)))
    plan = sched.schedule()
    assert sum(n for _, n in plan) == 8 and plan[0] == (lone, 8)


def test_shared_prefixes_group_sequences_by_their_common_leading_blocks():
    import numpy as np

    from kb.rag.batch import host_arrays, shared_prefixes

    bs = 4
    tables = [[1, 2, 3, 9], [1, 2, 3, 10], [1, 2, 7, 11], [1, 2, 3, 12, 13],  # share blocks 1, 2 (3 only 3 of them)
              [4, 5, 14], [4, 5, 15],  # share 4 only: 5 holds the second one's new token
              [6, 16]]  # alone
    ctx = [14, 13, 16, 17, 9, 5, 6]
    h = host_arrays([1] * len(ctx), ctx, tables, bs)
    plan = shared_prefixes(h["tables"], h["ctx"], bs, tile=3)
    assert plan["skip"].tolist() == [8, 8, 8, 8, 4, 4, 0]
    assert plan["members"][:6].tolist() == [0, 1, 2, 3, 4, 5]
    # tiles: (first member, count, prefix tokens, a sequence holding the prefix)
    assert plan["prefix_tiles"].tolist() == [[0, 3, 8, 0], [3, 1, 8, 0], [4, 2, 4, 4]]
    fixed = shared_prefixes(h["tables"], h["ctx"], bs, tile=3, max_tiles=2)  # room for the largest group only
    assert fixed["skip"].tolist() == [8, 8, 8, 8, 0, 0, 0]
    assert fixed["prefix_tiles"].tolist() == [[0, 3, 8, 0], [3, 1, 8, 0]]
    empty = shared_prefixes(np.array([[1], [2]], np.int32), np.array([3, 3], np.int32), bs, tile=3, max_tiles=1)
    assert empty["skip"].tolist() == [0, 0] and empty["prefix_tiles"].tolist() == [[0, 0, 0, 0]]


def test_a_long_prompt_gets_one_run_of_blocks_after_others_are_freed():
    """The pool hands out its lowest free ids first, so blocks freed in any order come back as one
    run, which the step's batch reports as contiguous (attention then reads it without a gather)."""
    from kb.rag.batch import Batch

    pool, _ = make(blocks=16)
    held = [pool.allocate() for _ in range(10)]
    assert held == list(range(10))
    for b in (7, 2, 9, 0, 5, 1, 8, 3, 6, 4):
        pool.release(b)
    run = [pool.allocate() for _ in range(6)]
    assert run == list(range(6))
    cpu = torch.device("cpu")
    assert Batch.build([21], [21], [run], BS, cpu).contiguous()
    assert Batch.build([20], [20], [run[:5] + [9]], BS, cpu).contiguous()  # the sixth block is not used
    assert not Batch.build([21], [21], [run[:5] + [9]], BS, cpu).contiguous()
    assert not Batch.build([4, 8], [4, 8], [[3], [0, 2]], BS, cpu).contiguous()
    assert Batch.build([4, 8], [4, 8], [[3], [0, 1]], BS, cpu).contiguous()


def test_block_names_keep_their_format_on_disk():
    """A block's name is sha256(parent digest + each token as 4 little-endian bytes): blocks a
    previous kb wrote keep their names (the same bytes as written out token by token)."""
    import hashlib

    from kb.common import ROOT_HASH, chain

    tokens = (0, 1, 255, 256, 151_935, 2**32 - 1)
    by_hand = hashlib.sha256(ROOT_HASH + b"".join(t.to_bytes(4, "little") for t in tokens)).digest()
    assert chain(ROOT_HASH, tokens) == by_hand
    assert chain(ROOT_HASH, ()).hex() == hashlib.sha256(ROOT_HASH).hexdigest()
    assert chain(chain(ROOT_HASH, (7,)), (8,)) != chain(ROOT_HASH, (7, 8))
