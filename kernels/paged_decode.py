"""Triton decode attention over the paged KV cache (layout as in kb.kernels.paged_attention):
one query per sequence, split over the context (flash decoding) so that a single long sequence
still fills the GPU; the query heads of one KV head share each key tile (GQA). When running
sequences share a cached prefix (the radix cache hands them the same blocks), a prefix pass reads
it once for up to PREFIX_TILE of them with tensor-core products (cascade attention) and the
per-sequence pass covers only what follows; a final pass merges the partial softmaxes.

It takes plain tensors; kb.rag.attention adapts a decode batch to it. Its reference is
kb.kernels.paged_attention_ref.attend; tests compare them on random inputs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kb.kernels.paged_attention import attend_tile, kv_tile

PREFIX_TILE = 64  # decode queries per tile of the shared-prefix pass


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
        offs_n, live, kv_off = kv_tile(table_ptr + rep * stride_table, n0, length, kvh, offs_d,
                                       KV_HEADS, DIM, BS, BLOCK_N)
        m_i, l_i, acc = attend_tile(q, kc_ptr, vc_ptr, kv_off, live, live[None, :], m_i, l_i, acc, scale,
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
        offs_n, live, kv_off = kv_tile(table_ptr + seq * stride_table, n0, hi, kvh, offs_d,
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


def decode(q, k_cache, v_cache, block_tables, ctx, scale: float, max_ctx: int, skip=None, members=None,
           prefix_tiles=None, split: int = 256, block_n: int = 32):
    """q: (seqs, heads, dim), one query per sequence -> (seqs, heads, dim). `max_ctx`: the longest
    context, which fixes the grid (a CUDA graph passes the longest the cache can hold). With
    shared prefixes planned (kb.rag.batch.shared_prefixes: `skip` (seqs,), `members` (seqs,),
    `prefix_tiles` (tiles, 4) int32), a prefix pass first attends each group's queries to their
    common prefix at once, and the per-sequence pass covers the rest."""
    seqs, heads, dim = q.shape
    kv_heads, bs = k_cache.shape[2], k_cache.shape[1]
    group = heads // kv_heads
    splits = triton.cdiv(max_ctx, split)
    part_o = torch.empty((seqs * heads * splits, dim), dtype=torch.float32, device=q.device)
    part_ml = torch.empty((seqs * heads * splits, 2), dtype=torch.float32, device=q.device)
    shared = skip is not None
    pre_o, pre_ml = part_o, part_ml  # unread stand-ins when nothing is shared
    if shared:
        pre_o = torch.empty((seqs * heads, dim), dtype=torch.float32, device=q.device)
        pre_ml = torch.empty((seqs * heads, 2), dtype=torch.float32, device=q.device)
        _decode_prefix[(prefix_tiles.shape[0], heads)](
            q, k_cache, v_cache, pre_o, pre_ml, block_tables, members, prefix_tiles, scale,
            q.stride(0), q.stride(1), block_tables.stride(0), HEADS=heads, KV_HEADS=kv_heads, GROUP=group,
            DIM=dim, BS=bs, BLOCK_M=PREFIX_TILE, BLOCK_N=64,
            PRECISION="ieee" if q.dtype == torch.float32 else "tf32")
    skip = skip if shared else ctx  # an unread stand-in
    _decode_split[(seqs, kv_heads, splits)](
        q, k_cache, v_cache, part_o, part_ml, block_tables, ctx, skip, scale, q.stride(0),
        q.stride(1), block_tables.stride(0), splits, KV_HEADS=kv_heads, GROUP=group,
        GROUP_P2=max(triton.next_power_of_2(group), 1), DIM=dim, BS=bs, SPLIT=split, BLOCK_N=block_n,
        HAS_SKIP=shared)
    out = torch.empty_like(q)
    _decode_reduce[(seqs, heads)](part_o, part_ml, pre_o, pre_ml, out, ctx, skip, out.stride(0),
                                  out.stride(1), splits, HEADS=heads, DIM=dim, SPLIT=split, HAS_SKIP=shared)
    return out
