"""Triton kernels for the generator's paged KV cache (one layer's cache: (blocks, block_size,
kv_heads, dim), a token's slot = block * block_size + offset):

- `store_kv`: write the step's new keys and values into their slots;
- `extend`: new queries of many sequences (variable lengths, back to back, no padding) against
  each sequence's cached prefix plus causal attention among themselves: prefill, cached-prefix
  prefill and mixed batches; a short step splits each tile's keys over several programs and
  merges their partial softmaxes;
- `decode`: one query per sequence, split over the context (flash decoding) so that a single
  long sequence still fills the GPU; the query heads of one KV head share each key tile (GQA).
  When running sequences share a cached prefix (the radix cache hands them the same blocks), a
  prefix pass reads it once for up to 64 of them with tensor-core products (cascade attention)
  and the per-sequence pass covers only what follows; a final pass merges the partial softmaxes.

Their oracle is kb.rag.attention's torch reference; tests compare them on random inputs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kb.rag.attention import EXTEND_TILE, PREFIX_TILE, Batch


@triton.jit
def _store_kv(k_ptr, v_ptr, kc_ptr, vc_ptr, slot_ptr, stride_t, stride_h,
              HEADS: tl.constexpr, HEADS_P2: tl.constexpr, DIM: tl.constexpr):
    t = tl.program_id(0)
    slot = tl.load(slot_ptr + t)
    h = tl.arange(0, HEADS_P2)[:, None]
    d = tl.arange(0, DIM)[None, :]
    mask = h < HEADS
    src = t * stride_t + h * stride_h + d
    dst = slot * HEADS * DIM + h * DIM + d
    tl.store(kc_ptr + dst, tl.load(k_ptr + src, mask=mask), mask=mask)
    tl.store(vc_ptr + dst, tl.load(v_ptr + src, mask=mask), mask=mask)


def store_kv(k_cache, v_cache, k, v, slots) -> None:
    """k, v: (tokens, kv_heads, dim) -> their slots of k_cache, v_cache."""
    heads, dim = k.shape[1], k.shape[2]
    k, v = k.to(k_cache.dtype).contiguous(), v.to(v_cache.dtype).contiguous()
    assert k_cache.is_contiguous() and v_cache.is_contiguous()
    _store_kv[(k.shape[0],)](k, v, k_cache, v_cache, slots, k.stride(0), k.stride(1),
                             HEADS=heads, HEADS_P2=triton.next_power_of_2(heads), DIM=dim)


@triton.jit
def _kv_tile(table_row, n0, end, kvh, offs_d, KV_HEADS: tl.constexpr, DIM: tl.constexpr, BS: tl.constexpr,
             BLOCK_N: tl.constexpr):
    """Keys n0 .. n0 + BLOCK_N of a sequence (its block-table row at `table_row`), one KV head:
    their positions, which of them are below `end`, and their (BLOCK_N, DIM) offsets in the cache."""
    offs_n = n0 + tl.arange(0, BLOCK_N)
    live = offs_n < end
    block = tl.load(table_row + offs_n // BS, mask=live, other=0)
    slot = (block * BS + offs_n % BS).to(tl.int64)
    return offs_n, live, slot[:, None] * (KV_HEADS * DIM) + kvh * DIM + offs_d[None, :]


@triton.jit
def _attend_tile(q, kc_ptr, vc_ptr, kv_off, live, keep, m_i, l_i, acc, scale, PRECISION: tl.constexpr):
    """One key tile of flash attention for a (BLOCK_M, DIM) tile of queries: the scores where
    `keep`, then the running max, sum and output brought up to date; returns (m, l, acc)."""
    k = tl.load(kc_ptr + kv_off, mask=live[:, None], other=0.0)
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
    s = tl.where(keep, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with no key to see in this tile
    p = tl.exp(s - m_safe[:, None])
    alpha = tl.exp(m_i - m_safe)
    v = tl.load(vc_ptr + kv_off, mask=live[:, None], other=0.0)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return m_new, l_i * alpha + tl.sum(p, 1), acc


@triton.jit
def _extend(q_ptr, kc_ptr, vc_ptr, o_ptr, part_o_ptr, part_ml_ptr, table_ptr, cu_ptr, ctx_ptr, tile_seq_ptr,
            tile_m_ptr, scale, n_tokens, stride_qt, stride_qh, stride_ot, stride_oh, stride_table,
            HEADS: tl.constexpr, KV_HEADS: tl.constexpr, GROUP: tl.constexpr, DIM: tl.constexpr, BS: tl.constexpr,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLITS: tl.constexpr, PRECISION: tl.constexpr):
    tile, head, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    seq = tl.load(tile_seq_ptr + tile)
    m0 = tl.load(tile_m_ptr + tile)
    q_begin = tl.load(cu_ptr + seq)
    q_len = tl.load(cu_ptr + seq + 1) - q_begin
    ctx = tl.load(ctx_ptr + seq)
    kvh = head // GROUP
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, DIM)
    q = tl.load(q_ptr + (q_begin + offs_m)[:, None] * stride_qt + head * stride_qh + offs_d[None, :],
                mask=offs_m[:, None] < q_len, other=0.0)
    q_pos = ctx - q_len + offs_m  # each query's position in its sequence
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, DIM], tl.float32)
    end = tl.minimum(ctx, ctx - q_len + m0 + BLOCK_M)  # no key after the tile's last query
    end = tl.where(m0 < q_len, end, 0)  # a tile past the sequence's queries (a CUDA graph's padding)
    chunk = tl.cdiv(tl.cdiv(end, SPLITS), BLOCK_N) * BLOCK_N  # this program's share of the keys
    lo = split * chunk
    hi = tl.minimum(end, lo + chunk)
    for n0 in range(lo, hi, BLOCK_N):
        offs_n, live, kv_off = _kv_tile(table_ptr + seq * stride_table, n0, hi, kvh, offs_d,
                                        KV_HEADS, DIM, BS, BLOCK_N)
        causal = (offs_n[None, :] <= q_pos[:, None]) & live[None, :]
        m_i, l_i, acc = _attend_tile(q, kc_ptr, vc_ptr, kv_off, live, causal, m_i, l_i, acc, scale, PRECISION)
    live_m = offs_m < q_len
    if SPLITS == 1:
        out = acc / l_i[:, None]
        tl.store(o_ptr + (q_begin + offs_m)[:, None] * stride_ot + head * stride_oh + offs_d[None, :],
                 out.to(o_ptr.dtype.element_ty), mask=live_m[:, None])
    else:  # partial results, merged by _extend_reduce
        row = ((split * n_tokens + q_begin + offs_m) * HEADS + head).to(tl.int64)
        tl.store(part_o_ptr + row[:, None] * DIM + offs_d[None, :], acc, mask=live_m[:, None])
        tl.store(part_ml_ptr + row * 2, m_i, mask=live_m)
        tl.store(part_ml_ptr + row * 2 + 1, l_i, mask=live_m)


@triton.jit
def _extend_reduce(part_o_ptr, part_ml_ptr, o_ptr, n_tokens, stride_ot, stride_oh,
                   HEADS: tl.constexpr, DIM: tl.constexpr, SPLITS: tl.constexpr):
    t, head = tl.program_id(0), tl.program_id(1)
    offs_d = tl.arange(0, DIM)
    m = float("-inf")
    l = 0.0
    acc = tl.zeros([DIM], tl.float32)
    for split in tl.static_range(SPLITS):
        row = ((split * n_tokens + t) * HEADS + head).to(tl.int64)
        m_s = tl.load(part_ml_ptr + row * 2)
        l_s = tl.load(part_ml_ptr + row * 2 + 1)
        m_new = tl.maximum(m, m_s)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        a, b = tl.exp(m - m_safe), tl.exp(m_s - m_safe)
        acc = acc * a + tl.load(part_o_ptr + row * DIM + offs_d) * b
        l = l * a + l_s * b
        m = m_new
    tl.store(o_ptr + t * stride_ot + head * stride_oh + offs_d, (acc / l).to(o_ptr.dtype.element_ty))


def extend_splits(tokens: int) -> int:
    """Programs each tile's keys are split over: a short step after a long cached context (a
    question after its sources) has few tiles, so each one's keys are shared out to fill the GPU.
    (On an H100, 256 new tokens after 2,048 cached: 60 us a layer unsplit, 20 us in 4.)"""
    return 8 if tokens <= 128 else 4 if tokens <= 512 else 1


def extend(q, k_cache, v_cache, batch: Batch, scale: float, block_m: int = 0, block_n: int = 64,
           splits: int = 0):
    """q: (tokens, heads, dim) -> (tokens, heads, dim); `block_m`: queries per tile, `splits`:
    programs per tile over its keys (0: by the step's size)."""
    tokens, heads, dim = q.shape
    block_m = block_m or EXTEND_TILE
    splits = splits or extend_splits(tokens)
    kv_heads, bs = k_cache.shape[2], k_cache.shape[1]
    tiles = batch.tiles(block_m)
    out = torch.empty_like(q)
    part_o = part_ml = out  # unread when there is one split
    if splits > 1:
        part_o = torch.empty((splits * tokens * heads, dim), dtype=torch.float32, device=q.device)
        part_ml = torch.empty((splits * tokens * heads, 2), dtype=torch.float32, device=q.device)
    _extend[(tiles.shape[1], heads, splits)](
        q, k_cache, v_cache, out, part_o, part_ml, batch.block_tables, batch.cu_q, batch.ctx, tiles[0], tiles[1],
        scale, tokens, q.stride(0), q.stride(1), out.stride(0), out.stride(1), batch.block_tables.stride(0),
        HEADS=heads, KV_HEADS=kv_heads, GROUP=heads // kv_heads, DIM=dim, BS=bs, BLOCK_M=block_m, BLOCK_N=block_n,
        SPLITS=splits,
        # fp32 stays fp32 (no TF32), so that it matches the reference to 1e-5
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32")
    if splits > 1:
        _extend_reduce[(tokens, heads)](part_o, part_ml, out, tokens, out.stride(0), out.stride(1),
                                        HEADS=heads, DIM=dim, SPLITS=splits)
    return out


@triton.jit
def _decode_prefix(q_ptr, kc_ptr, vc_ptr, pre_o_ptr, pre_ml_ptr, table_ptr, members_ptr, tiles_ptr, scale,
                   stride_qt, stride_qh, stride_table,
                   HEADS: tl.constexpr, KV_HEADS: tl.constexpr, GROUP: tl.constexpr, DIM: tl.constexpr,
                   BS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    """One head of up to BLOCK_M decode queries of sequences sharing a prefix, against that prefix:
    the keys are loaded once for all of them and the products run on tensor cores."""
    tile, head = tl.program_id(0), tl.program_id(1)
    first = tl.load(tiles_ptr + tile * 4)
    count = tl.load(tiles_ptr + tile * 4 + 1)
    length = tl.load(tiles_ptr + tile * 4 + 2)
    rep = tl.load(tiles_ptr + tile * 4 + 3)
    offs_m = tl.arange(0, BLOCK_M)
    live_m = offs_m < count
    seq = tl.load(members_ptr + first + offs_m, mask=live_m, other=0)
    kvh = head // GROUP
    offs_d = tl.arange(0, DIM)
    q = tl.load(q_ptr + seq[:, None] * stride_qt + head * stride_qh + offs_d[None, :], mask=live_m[:, None], other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, DIM], tl.float32)
    for n0 in range(0, length, BLOCK_N):
        offs_n, live, kv_off = _kv_tile(table_ptr + rep * stride_table, n0, length, kvh, offs_d,
                                        KV_HEADS, DIM, BS, BLOCK_N)
        m_i, l_i, acc = _attend_tile(q, kc_ptr, vc_ptr, kv_off, live, live[None, :], m_i, l_i, acc, scale,
                                     PRECISION)
    row = seq * HEADS + head
    tl.store(pre_o_ptr + row[:, None] * DIM + offs_d[None, :], acc, mask=live_m[:, None])
    tl.store(pre_ml_ptr + row * 2, m_i, mask=live_m)
    tl.store(pre_ml_ptr + row * 2 + 1, l_i, mask=live_m)


@triton.jit
def _decode_split(q_ptr, kc_ptr, vc_ptr, part_o_ptr, part_ml_ptr, table_ptr, ctx_ptr, skip_ptr, scale,
                  stride_qt, stride_qh, stride_table, splits,
                  KV_HEADS: tl.constexpr, GROUP: tl.constexpr, GROUP_P2: tl.constexpr, DIM: tl.constexpr,
                  BS: tl.constexpr, SPLIT: tl.constexpr, BLOCK_N: tl.constexpr, HAS_SKIP: tl.constexpr):
    seq, kvh, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    ctx = tl.load(ctx_ptr + seq)
    skip = 0
    if HAS_SKIP:  # the shared prefix before it is the prefix pass's
        skip = tl.load(skip_ptr + seq)
    g = tl.arange(0, GROUP_P2)
    offs_d = tl.arange(0, DIM)
    heads = kvh * GROUP + g
    q = tl.load(q_ptr + seq * stride_qt + heads[:, None] * stride_qh + offs_d[None, :],
                mask=g[:, None] < GROUP, other=0.0)
    m_i = tl.full([GROUP_P2], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_P2], tl.float32)
    acc = tl.zeros([GROUP_P2, DIM], tl.float32)
    lo = skip + split * SPLIT
    hi = tl.minimum(ctx, lo + SPLIT)
    for n0 in range(lo, hi, BLOCK_N):
        offs_n, live, kv_off = _kv_tile(table_ptr + seq * stride_table, n0, hi, kvh, offs_d,
                                        KV_HEADS, DIM, BS, BLOCK_N)
        k = tl.load(kc_ptr + kv_off, mask=live[:, None], other=0.0)
        s = tl.sum(q[:, None, :].to(tl.float32) * k[None, :, :].to(tl.float32), 2) * scale
        s = tl.where(live[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m_i - m_new)
        v = tl.load(vc_ptr + kv_off, mask=live[:, None], other=0.0)
        acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * v[None, :, :].to(tl.float32), 1)
        l_i = l_i * alpha + tl.sum(p, 1)
        m_i = m_new
    row = (seq * KV_HEADS * GROUP + heads) * splits + split  # (seq, head, split)
    keep = g < GROUP
    tl.store(part_o_ptr + row[:, None] * DIM + offs_d[None, :], acc, mask=keep[:, None])
    tl.store(part_ml_ptr + row * 2, m_i, mask=keep)
    tl.store(part_ml_ptr + row * 2 + 1, l_i, mask=keep)


@triton.jit
def _decode_reduce(part_o_ptr, part_ml_ptr, pre_o_ptr, pre_ml_ptr, o_ptr, ctx_ptr, skip_ptr, stride_ot, stride_oh,
                   splits, HEADS: tl.constexpr, DIM: tl.constexpr, SPLIT: tl.constexpr, HAS_SKIP: tl.constexpr):
    seq, head = tl.program_id(0), tl.program_id(1)
    ctx = tl.load(ctx_ptr + seq)
    offs_d = tl.arange(0, DIM)
    m = float("-inf")
    l = 0.0
    acc = tl.zeros([DIM], tl.float32)
    skip = 0
    if HAS_SKIP:  # start from the prefix pass's partial result, if the sequence had one
        skip = tl.load(skip_ptr + seq)
        row = seq * HEADS + head
        m = tl.where(skip > 0, tl.load(pre_ml_ptr + row * 2), m)
        l = tl.where(skip > 0, tl.load(pre_ml_ptr + row * 2 + 1), l)
        acc = tl.where(skip > 0, tl.load(pre_o_ptr + row * DIM + offs_d), acc)
    for s in range(0, tl.cdiv(ctx - skip, SPLIT)):
        row = (seq * HEADS + head) * splits + s
        m_s = tl.load(part_ml_ptr + row * 2)
        l_s = tl.load(part_ml_ptr + row * 2 + 1)
        m_new = tl.maximum(m, m_s)
        a, b = tl.exp(m - m_new), tl.exp(m_s - m_new)
        acc = acc * a + tl.load(part_o_ptr + row * DIM + offs_d) * b
        l = l * a + l_s * b
        m = m_new
    tl.store(o_ptr + seq * stride_ot + head * stride_oh + offs_d, (acc / l).to(o_ptr.dtype.element_ty))


def decode(q, k_cache, v_cache, batch: Batch, scale: float, max_ctx: int | None = None,
           split: int = 256, block_n: int = 32):
    """q: (seqs, heads, dim), one query per sequence. `max_ctx` fixes the grid (CUDA graphs).
    When the batch has shared prefixes planned (`batch.skip`), a prefix pass first attends each
    group's queries to their common prefix at once, and the per-sequence pass covers the rest."""
    seqs, heads, dim = q.shape
    kv_heads, bs = k_cache.shape[2], k_cache.shape[1]
    group = heads // kv_heads
    splits = triton.cdiv(max_ctx or max(batch.ctx_lens), split)
    part_o = torch.empty((seqs * heads * splits, dim), dtype=torch.float32, device=q.device)
    part_ml = torch.empty((seqs * heads * splits, 2), dtype=torch.float32, device=q.device)
    shared = batch.skip is not None
    pre_o, pre_ml, skip = part_o, part_ml, batch.ctx  # unread stand-ins when nothing is shared
    if shared:
        skip = batch.skip
        pre_o = torch.empty((seqs * heads, dim), dtype=torch.float32, device=q.device)
        pre_ml = torch.empty((seqs * heads, 2), dtype=torch.float32, device=q.device)
        tiles = batch.prefix_tiles
        _decode_prefix[(tiles.shape[0], heads)](
            q, k_cache, v_cache, pre_o, pre_ml, batch.block_tables, batch.members, tiles, scale,
            q.stride(0), q.stride(1), batch.block_tables.stride(0), HEADS=heads, KV_HEADS=kv_heads, GROUP=group,
            DIM=dim, BS=bs, BLOCK_M=PREFIX_TILE, BLOCK_N=64,
            PRECISION="ieee" if q.dtype == torch.float32 else "tf32")
    _decode_split[(seqs, kv_heads, splits)](
        q, k_cache, v_cache, part_o, part_ml, batch.block_tables, batch.ctx, skip, scale, q.stride(0),
        q.stride(1), batch.block_tables.stride(0), splits, KV_HEADS=kv_heads, GROUP=group,
        GROUP_P2=max(triton.next_power_of_2(group), 1), DIM=dim, BS=bs, SPLIT=split, BLOCK_N=block_n,
        HAS_SKIP=shared)
    out = torch.empty_like(q)
    _decode_reduce[(seqs, heads)](part_o, part_ml, pre_o, pre_ml, out, batch.ctx, skip, out.stride(0),
                                  out.stride(1), splits, HEADS=heads, DIM=dim, SPLIT=split, HAS_SKIP=shared)
    return out


class TritonBackend:
    name = "triton"

    def __init__(self, heads: int, kv_heads: int, scale: float):
        self.heads, self.kv_heads, self.scale = heads, kv_heads, scale

    def __call__(self, k_cache, v_cache, qkv, cos, sin, batch: Batch) -> torch.Tensor:
        from kb.kernels.fused import rope_store

        q = rope_store(qkv, cos, sin, k_cache, v_cache, batch.slots, self.heads, self.kv_heads)
        if batch.decode:
            return decode(q, k_cache, v_cache, batch, self.scale, max_ctx=batch.max_ctx or None)
        return extend(q, k_cache, v_cache, batch, self.scale)
