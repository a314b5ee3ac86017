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

from kb.kernels.paged_attention import LOG2E, attend_range, dependent, precision, wait_for_previous

PREFIX_TILE = 64  # decode queries per tile of the shared-prefix pass


@triton.jit
def _attend_all(q, kc_ptr, vc_ptr, table_row, lo, hi, kvh, offs_d, m_i, l_i, acc, scale,
                ROWS: tl.constexpr, KV_HEADS: tl.constexpr, DIM: tl.constexpr, BS: tl.constexpr,
                BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    """Every query row sees keys lo .. hi (decode: all are before the query): whole tiles unmasked."""
    hi = tl.maximum(hi, lo)  # an empty share
    mid = lo + (hi - lo) // BLOCK_N * BLOCK_N
    q_pos = tl.zeros([ROWS], tl.int32) + hi
    return attend_range(q, q_pos, kc_ptr, vc_ptr, table_row, lo, mid, hi, kvh, offs_d, m_i, l_i, acc, scale,
                        KV_HEADS, DIM, BS, BLOCK_N, PRECISION, False)


# as in kb.kernels.paged_attention: a step's widest table and its index arrays, one variant for all
STEP_SIZED = {
    "_decode_prefix": dict(do_not_specialize=["stride_table"],
                           do_not_specialize_on_alignment=["table_ptr", "members_ptr", "tiles_ptr"]),
    "_decode_split": dict(do_not_specialize=["stride_table"],
                          do_not_specialize_on_alignment=["table_ptr", "ctx_ptr", "skip_ptr"]),
    "_decode_reduce": dict(do_not_specialize_on_alignment=["skip_ptr"]),
}


@triton.jit(**STEP_SIZED["_decode_prefix"])
def _decode_prefix(q_ptr, kc_ptr, vc_ptr, pre_o_ptr, pre_ml_ptr, table_ptr, members_ptr, tiles_ptr, scale,
                   stride_qt, stride_qh, stride_table,
                   HEADS: tl.constexpr, KV_HEADS: tl.constexpr, GROUP: tl.constexpr, DIM: tl.constexpr,
                   BS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
                   PDL: tl.constexpr):
    """One head of up to BLOCK_M decode queries of sequences sharing a prefix, against that prefix:
    the keys are loaded once for all of them and the products run on tensor cores."""
    wait_for_previous(PDL)
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
    m_i, l_i, acc = _attend_all(q, kc_ptr, vc_ptr, table_ptr + rep * stride_table, 0, length, kvh, offs_d,
                                m_i, l_i, acc, scale, BLOCK_M, KV_HEADS, DIM, BS, BLOCK_N, PRECISION)
    row = seq * HEADS + head
    tl.store(pre_o_ptr + row[:, None] * DIM + offs_d[None, :], acc, mask=live_m[:, None])
    tl.store(pre_ml_ptr + row * 2, m_i, mask=live_m)
    tl.store(pre_ml_ptr + row * 2 + 1, l_i, mask=live_m)


@triton.jit(**STEP_SIZED["_decode_split"])
def _decode_split(q_ptr, kc_ptr, vc_ptr, part_o_ptr, part_ml_ptr, table_ptr, ctx_ptr, skip_ptr, scale,
                  stride_qt, stride_qh, stride_table,
                  HEADS: tl.constexpr, KV_HEADS: tl.constexpr, GROUP: tl.constexpr, GROUP_P2: tl.constexpr,
                  DIM: tl.constexpr, BS: tl.constexpr, SPLITS: tl.constexpr, BLOCK_N: tl.constexpr,
                  HAS_SKIP: tl.constexpr, PRECISION: tl.constexpr, PDL: tl.constexpr):
    """The query heads of one KV head of one sequence against a 1/SPLITS share of its context:
    the share is cut from the sequence's own length, so the grid fits any context (a CUDA graph's
    too) and a long one is spread over every program. The heads are the rows of a tensor-core
    product (padded to 16)."""
    wait_for_previous(PDL)
    seq, kvh, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    ctx = tl.load(ctx_ptr + seq)
    skip = 0
    if HAS_SKIP:  # the shared prefix before it is the prefix pass's
        skip = tl.load(skip_ptr + seq)
    g = tl.arange(0, GROUP_P2)
    offs_d = tl.arange(0, DIM)
    heads = kvh * GROUP + g
    keep = g < GROUP
    q = tl.load(q_ptr + seq * stride_qt + heads[:, None] * stride_qh + offs_d[None, :], mask=keep[:, None], other=0.0)
    m_i = tl.full([GROUP_P2], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_P2], tl.float32)
    acc = tl.zeros([GROUP_P2, DIM], tl.float32)
    chunk = tl.cdiv(tl.cdiv(ctx - skip, SPLITS), BLOCK_N) * BLOCK_N
    lo = skip + split * chunk
    hi = tl.minimum(ctx, lo + chunk)
    m_i, l_i, acc = _attend_all(q, kc_ptr, vc_ptr, table_ptr + seq * stride_table, lo, hi, kvh, offs_d,
                                m_i, l_i, acc, scale, GROUP_P2, KV_HEADS, DIM, BS, BLOCK_N, PRECISION)
    row = (seq * HEADS + heads) * SPLITS + split  # (seq, head, split); an empty share writes m=-inf, l=0
    tl.store(part_o_ptr + row[:, None] * DIM + offs_d[None, :], acc, mask=keep[:, None])
    tl.store(part_ml_ptr + row * 2, m_i, mask=keep)
    tl.store(part_ml_ptr + row * 2 + 1, l_i, mask=keep)


@triton.jit(**STEP_SIZED["_decode_reduce"])
def _decode_reduce(part_o_ptr, part_ml_ptr, pre_o_ptr, pre_ml_ptr, o_ptr, skip_ptr, stride_ot, stride_oh,
                   HEADS: tl.constexpr, DIM: tl.constexpr, SPLITS: tl.constexpr, HAS_SKIP: tl.constexpr,
                   PDL: tl.constexpr):
    """Merge one head's partial softmaxes (all SPLITS at once, and the prefix pass's if any)."""
    wait_for_previous(PDL)
    seq, head = tl.program_id(0), tl.program_id(1)
    offs_d = tl.arange(0, DIM)
    rows = (seq * HEADS + head) * SPLITS + tl.arange(0, SPLITS)
    m_s = tl.load(part_ml_ptr + rows * 2)
    l_s = tl.load(part_ml_ptr + rows * 2 + 1)
    o_s = tl.load(part_o_ptr + rows[:, None] * DIM + offs_d[None, :])
    m = tl.max(m_s, 0)
    if HAS_SKIP:  # and the prefix pass's partial result, if the sequence had one
        row = seq * HEADS + head
        shared = tl.load(skip_ptr + seq) > 0
        m_p = tl.where(shared, tl.load(pre_ml_ptr + row * 2), float("-inf"))
        m = tl.maximum(m, m_p)
        w_p = tl.math.exp2(m_p - m)
        l = tl.where(shared, tl.load(pre_ml_ptr + row * 2 + 1) * w_p, 0.0)
        acc = tl.where(shared, tl.load(pre_o_ptr + row * DIM + offs_d) * w_p, 0.0)
    else:
        l = 0.0
        acc = tl.zeros([DIM], tl.float32)
    w = tl.math.exp2(m_s - m)  # 0 for an empty share
    l += tl.sum(l_s * w, 0)
    acc += tl.sum(o_s * w[:, None], 0)
    tl.store(o_ptr + seq * stride_ot + head * stride_oh + offs_d, (acc / l).to(o_ptr.dtype.element_ty))


def decode_splits(seqs: int, kv_heads: int) -> int:
    """Shares each sequence's context is split into: enough programs to fill the GPU (about 256)
    for a few sequences, one each when the batch fills it alone. (H200, one sequence after 30K
    tokens, 2 KV heads: 64 shares of 64-key tiles 11.5 us a layer, 128 of 128-key tiles 8.2 us.)"""
    n = 256 // (seqs * kv_heads)
    return min(128, 1 << (n.bit_length() - 1)) if n else 1


# Launch settings of the per-sequence pass (H200, bench/batch_sweep.py and the decode sweep of
# 2026-12-03): when a context is split into shares, big tiles (one sequence after 30K tokens:
# 128-key tiles 8.2 us a layer against 11.5 for 64); when each sequence is one program, the batch
# fills the GPU and its own contexts are short after a shared prefix, small tiles and few stages
# (more programs at once: 512 sequences, 752 shared + 30..60 own tokens, 32 heads of dim 128:
# 157.6 us a layer against 309.1 with the split settings).
SPLIT = dict(block_n=128, warps=4, stages=3)
FILLED = dict(block_n=32, warps=2, stages=2)


def decode(q, k_cache, v_cache, block_tables, ctx, scale: float, skip=None, members=None, prefix_tiles=None,
           splits: int = 0, block_n: int = 0, warps: int = 0, stages: int = 0):
    """q: (seqs, heads, dim), one query per sequence -> (seqs, heads, dim). The grid depends on
    the batch's shape alone (`splits` shares of each context; 0: `decode_splits`), so a CUDA graph
    replays it for any context lengths. With shared prefixes planned (kb.rag.batch.shared_prefixes:
    `skip` (seqs,), `members` (seqs,), `prefix_tiles` (tiles, 4) int32), a prefix pass first
    attends each group's queries to their common prefix at once, and the per-sequence pass covers
    the rest. `block_n`, `warps`, `stages` (0: SPLIT, or FILLED with one share per sequence):
    the per-sequence pass's key tile and launch settings."""
    seqs, heads, dim = q.shape
    kv_heads, bs = k_cache.shape[2], k_cache.shape[1]
    group = heads // kv_heads
    splits = splits or decode_splits(seqs, kv_heads)
    chosen = FILLED if splits == 1 else SPLIT
    block_n, warps, stages = block_n or chosen["block_n"], warps or chosen["warps"], stages or chosen["stages"]
    scale = scale * LOG2E
    pdl = dependent(q)
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
            DIM=dim, BS=bs, BLOCK_M=PREFIX_TILE, BLOCK_N=64, PRECISION=precision(q), PDL=pdl, launch_pdl=pdl)
    skip = skip if shared else ctx  # an unread stand-in
    _decode_split[(seqs, kv_heads, splits)](
        q, k_cache, v_cache, part_o, part_ml, block_tables, ctx, skip, scale, q.stride(0),
        q.stride(1), block_tables.stride(0), HEADS=heads, KV_HEADS=kv_heads, GROUP=group,
        GROUP_P2=max(triton.next_power_of_2(group), 16), DIM=dim, BS=bs, SPLITS=splits, BLOCK_N=block_n,
        HAS_SKIP=shared, PRECISION=precision(q), PDL=pdl, num_warps=warps, num_stages=stages, launch_pdl=pdl)
    out = torch.empty_like(q)
    _decode_reduce[(seqs, heads)](part_o, part_ml, pre_o, pre_ml, out, skip, out.stride(0), out.stride(1),
                                  HEADS=heads, DIM=dim, SPLITS=splits, HAS_SKIP=shared, PDL=pdl, launch_pdl=pdl)
    return out
