"""Triton kernels for the generator's paged KV cache (one layer's cache: (blocks, block_size,
kv_heads, dim), a token's slot = block * block_size + offset; `block_tables` (seqs, max blocks)
int32, `ctx` (seqs,) int32: each sequence's length with its new tokens):

- `store_kv`: write the step's new keys and values into their slots;
- `extend`: new queries of many sequences (variable lengths, back to back, no padding) against
  each sequence's cached prefix plus causal attention among themselves: prefill, cached-prefix
  prefill and mixed batches; a short step splits each tile's keys over several programs and
  merges their partial softmaxes;
- `kv_tile`, `attend_tile`, `attend_range`: the key tile, the online-softmax step and a range of
  tiles (unmasked where nothing is hidden) that `extend` and the decode kernels
  (kb.kernels.paged_decode) share.

They take plain tensors; kb.rag.attention adapts a step's batch to them. Their reference is
kb.kernels.paged_attention_ref; tests compare them on random inputs.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

EXTEND_TILE = 64  # queries per tile of the extend kernel (fastest for 64 to 2,304 new tokens on an H100)
# A step with a sequence of at least LONG_STEP new tokens (a long prompt's chunks; more than any
# prefill CUDA graph's bucket) takes bigger tiles and 8 warps. On an H200: at head dim
# 128, 8,192 queries after 24,576 cached went from 254 to 292 TFLOP/s (bench/prefill_sweep.py) and
# a 128K prompt on a 7B shape from 17.3 to 14.9 s (bench/generate.py d); at head dim 64, a 32K
# prompt of the 0.5B shape in one step from 0.190 to 0.181 s (in 8,192-token chunks 0.204 ->
# 0.201 s). An earlier end-to-end loss at dim 64 was Triton compiling a variant inside the timed run.
# With the heavy tiles first and the scale folded into the exponent (same H200, one layer): 32,000
# new tokens at dim 64 from 5.18 to 4.52 ms with 3 stages (4.63 with 2); at dim 128 no setting beat
# 128/32, 2 stages by more than 2 %.
LONG_STEP = 6144
LOG2E = 1.4426950408889634  # the kernels' softmax runs in base 2: scores are scaled by log2(e) once
LONG = {128: dict(block_m=128, block_n=32, warps=8, stages=2), 64: dict(block_m=128, block_n=64, warps=8, stages=3)}
# ... and over one run of blocks (no gather; same H200, one layer): 32,000 new tokens at dim 64
# 3.99 ms (4.53 gathered); at dim 128, 32,768 new tokens 15.4 ms (18.5 gathered, the best
# setting of each), and 32,768 after 98,304 cached 112 ms (135 with LONG's settings)
LONG_RUN = {128: dict(block_m=128, block_n=128, warps=8, stages=3), 64: LONG[64]}


def precision(x: torch.Tensor) -> str:
    """tl.dot's input precision for x's dtype: fp32 stays fp32 (Hopper would round it to tf32), so
    that results match the torch references to 1e-5."""
    return "ieee" if x.dtype == torch.float32 else "tf32"


def dependent(x: torch.Tensor) -> bool:
    """Whether a decode step's kernels on x's device launch as programmatic dependents (Hopper and
    later; not on Triton's interpreter, which lacks the instructions): each may start, and stream
    its first weights, while the kernel before it ends, then waits for that kernel's results. The
    whole chain of a decode step's layers is such kernels, so no launch gap is left between them.
    Off with KB_PDL=0 (to measure it)."""
    return x.is_cuda and PDL and _hopper(x.device.index)


PDL = os.environ.get("KB_PDL", "1") != "0" and os.environ.get("TRITON_INTERPRET") != "1"


@functools.cache
def _hopper(index: int | None) -> bool:
    return torch.cuda.get_device_capability(index)[0] >= 9


@triton.jit
def wait_for_previous(PDL: tl.constexpr):
    """A dependent launch's barrier (see `dependent`): what comes after it sees every earlier
    kernel's writes, and the next kernel may launch. Nothing before it may read what an earlier
    kernel writes, nor write anything (only weights are read before it)."""
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()


def settings(tokens: int, dim: int, contiguous=lambda: False, itemsize: int = 2) -> dict:
    """The extend kernel's tiles and launch settings for a step whose longest sequence has `tokens`
    new tokens (many short ones, as 500 prompts after a shared prefix, keep 64-query tiles). For a
    long step, `contiguous()` (asked only then) says whether each sequence's blocks are one run.
    `itemsize`: bytes of q's dtype; fp32 keeps LONG's tiles (compiled for sm_90, LONG_RUN's at dim
    128 need 384 KiB of shared memory in fp32, over the 227 KiB a Hopper block has; LONG's 113 KiB)."""
    if tokens >= LONG_STEP and dim in LONG:
        run = contiguous()
        return dict((LONG_RUN if run and itemsize <= 2 else LONG)[dim], contiguous=run)
    return dict(block_m=EXTEND_TILE, block_n=64, warps=4, stages=3)


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
def kv_tile(table_row, n0, end, kvh, offs_d, KV_HEADS: tl.constexpr, DIM: tl.constexpr, BS: tl.constexpr,
            BLOCK_N: tl.constexpr, CONTIGUOUS: tl.constexpr):
    """Keys n0 .. n0 + BLOCK_N of a sequence (its block-table row at `table_row`), one KV head:
    their positions, which of them are below `end`, and their (BLOCK_N, DIM) offsets in the cache.
    CONTIGUOUS: the row's blocks are consecutive, so a key's slot follows from the first block's
    (no gather: the loads' addresses are known a tile ahead)."""
    offs_n = n0 + tl.arange(0, BLOCK_N)
    live = offs_n < end
    if CONTIGUOUS:
        slot = tl.load(table_row).to(tl.int64) * BS + offs_n
    else:
        block = tl.load(table_row + offs_n // BS, mask=live, other=0)
        slot = (block * BS + offs_n % BS).to(tl.int64)
    return offs_n, live, slot[:, None] * (KV_HEADS * DIM) + kvh * DIM + offs_d[None, :]


@triton.jit
def attend_tile(q, kc_ptr, vc_ptr, kv_off, live, keep, m_i, l_i, acc, scale, PRECISION: tl.constexpr,
                MASKED: tl.constexpr):
    """One key tile of flash attention for a (BLOCK_M, DIM) tile of queries: the scores where
    `keep`, then the running max, sum and output brought up to date; returns (m, l, acc).
    `scale` includes log2(e): scores and maxima are in base 2 (exp2 is the hardware's). Without
    MASKED, every key of the tile is there and seen by every query (`live`, `keep` unread): no
    masks, the common case of a long context, whose masked tiles are the diagonal and the end."""
    if MASKED:
        k = tl.load(kc_ptr + kv_off, mask=live[:, None], other=0.0)
        s = tl.where(keep, tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with no key to see in this tile
        p = tl.math.exp2(s - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        v = tl.load(vc_ptr + kv_off, mask=live[:, None], other=0.0)
    else:  # every row sees a key: its maximum is finite, and scaling folds into the subtraction
        k = tl.load(kc_ptr + kv_off)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
        m_new = tl.maximum(m_i, tl.max(s, 1) * scale)
        p = tl.math.exp2(s * scale - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        v = tl.load(vc_ptr + kv_off)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
    return m_new, l_i * alpha + tl.sum(p, 1), acc


@triton.jit
def attend_range(q, q_pos, kc_ptr, vc_ptr, table_row, lo, mid, hi, kvh, offs_d, m_i, l_i, acc, scale,
                 KV_HEADS: tl.constexpr, DIM: tl.constexpr, BS: tl.constexpr, BLOCK_N: tl.constexpr,
                 PRECISION: tl.constexpr, CONTIGUOUS: tl.constexpr):
    """A tile of queries at positions `q_pos` against keys lo .. hi of one sequence (its block-table
    row at `table_row`): the tiles before `mid` (a multiple of BLOCK_N past lo) unmasked, as every
    query sees every key there; the rest masked by position and by hi. Returns (m, l, acc)."""
    for n0 in range(lo, mid, BLOCK_N):
        offs_n, live, kv_off = kv_tile(table_row, n0, hi, kvh, offs_d, KV_HEADS, DIM, BS, BLOCK_N, CONTIGUOUS)
        m_i, l_i, acc = attend_tile(q, kc_ptr, vc_ptr, kv_off, live, live, m_i, l_i, acc, scale, PRECISION, False)
    for n0 in range(mid, hi, BLOCK_N):
        offs_n, live, kv_off = kv_tile(table_row, n0, hi, kvh, offs_d, KV_HEADS, DIM, BS, BLOCK_N, CONTIGUOUS)
        keep = (offs_n[None, :] <= q_pos[:, None]) & live[None, :]
        m_i, l_i, acc = attend_tile(q, kc_ptr, vc_ptr, kv_off, live, keep, m_i, l_i, acc, scale, PRECISION, True)
    return m_i, l_i, acc


# Step-sized arguments, by kernel: the token count, the widest table, and the index arrays (views at
# step-dependent offsets of one buffer: their 16-byte alignment varies). Triton would compile a new
# variant for each divisibility by 16 it meets, some of them inside a later step; one serves all.
STEP_SIZED = {
    "_extend": dict(do_not_specialize=["n_tokens", "stride_table"],
                    do_not_specialize_on_alignment=["table_ptr", "cu_ptr", "ctx_ptr", "tile_seq_ptr", "tile_m_ptr"]),
    "_extend_reduce": dict(do_not_specialize=["n_tokens"]),
}


@triton.jit(**STEP_SIZED["_extend"])
def _extend(q_ptr, kc_ptr, vc_ptr, o_ptr, part_o_ptr, part_ml_ptr, table_ptr, cu_ptr, ctx_ptr, tile_seq_ptr,
            tile_m_ptr, scale, n_tokens, stride_qt, stride_qh, stride_ot, stride_oh, stride_table,
            HEADS: tl.constexpr, KV_HEADS: tl.constexpr, GROUP: tl.constexpr, DIM: tl.constexpr, BS: tl.constexpr,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLITS: tl.constexpr, PRECISION: tl.constexpr,
            CONTIGUOUS: tl.constexpr):
    # heads vary fastest (sharers of a KV head run together); the last tiles (most keys) go first
    head, tile, split = tl.program_id(0) % HEADS, (tl.num_programs(0) - 1 - tl.program_id(0)) // HEADS, tl.program_id(1)
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
    m_i, l_i = tl.full([BLOCK_M], float("-inf"), tl.float32), tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, DIM], tl.float32)
    end = tl.minimum(ctx, ctx - q_len + m0 + BLOCK_M)  # no key after the tile's last query
    end = tl.where(m0 < q_len, end, 0)  # a tile past the sequence's queries (a CUDA graph's padding)
    chunk = tl.cdiv(tl.cdiv(end, SPLITS), BLOCK_N) * BLOCK_N  # this program's share of the keys
    lo = split * chunk
    hi = tl.minimum(end, lo + chunk)
    # whole tiles of keys that every query of the tile sees (up to its first query's position)
    # need no mask; the diagonal and the range's end do
    mid = tl.maximum(lo, tl.minimum(hi, ctx - q_len + m0 + 1) // BLOCK_N * BLOCK_N)
    m_i, l_i, acc = attend_range(q, q_pos, kc_ptr, vc_ptr, table_ptr + seq * stride_table, lo, mid, hi, kvh, offs_d,
                                 m_i, l_i, acc, scale, KV_HEADS, DIM, BS, BLOCK_N, PRECISION, CONTIGUOUS)
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


@triton.jit(**STEP_SIZED["_extend_reduce"])
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
        a, b = tl.math.exp2(m - m_safe), tl.math.exp2(m_s - m_safe)
        acc = acc * a + tl.load(part_o_ptr + row * DIM + offs_d) * b
        l = l * a + l_s * b
        m = m_new
    tl.store(o_ptr + t * stride_ot + head * stride_oh + offs_d, (acc / l).to(o_ptr.dtype.element_ty))


def extend_splits(tokens: int) -> int:
    """Programs each tile's keys are split over: a short step after a long cached context (a
    question after its sources) has few tiles, so each one's keys are shared out to fill the GPU.
    (On an H100, 256 new tokens after 2,048 cached: 60 us a layer unsplit, 20 us in 4.)"""
    return 8 if tokens <= 128 else 4 if tokens <= 512 else 1


def extend(q, k_cache, v_cache, block_tables, cu_q, ctx, tiles, scale: float, block_m: int = EXTEND_TILE,
           block_n: int = 64, splits: int = 0, warps: int = 4, stages: int = 3, contiguous: bool = False):
    """q: (tokens, heads, dim) -> (tokens, heads, dim). `cu_q` (seqs + 1,) int32: where each
    sequence's queries start; `tiles` (2, n) int32: each tile of `block_m` queries' sequence and
    first query (made for this `block_m`); `splits`: programs per tile over its keys (0: by the
    step's size); `warps`, `stages`: Triton's launch settings (its defaults, 4 and 3);
    `contiguous`: every sequence's blocks are consecutive (block_tables[i, j] = block_tables[i, 0] + j)."""
    tokens, heads, dim = q.shape
    splits = splits or extend_splits(tokens)
    kv_heads, bs = k_cache.shape[2], k_cache.shape[1]
    out = torch.empty_like(q)
    part_o = part_ml = out  # unread when there is one split
    if splits > 1:
        part_o = torch.empty((splits * tokens * heads, dim), dtype=torch.float32, device=q.device)
        part_ml = torch.empty((splits * tokens * heads, 2), dtype=torch.float32, device=q.device)
    _extend[(heads * tiles.shape[1], splits)](
        q, k_cache, v_cache, out, part_o, part_ml, block_tables, cu_q, ctx, tiles[0], tiles[1],
        scale * LOG2E, tokens, q.stride(0), q.stride(1), out.stride(0), out.stride(1), block_tables.stride(0),
        HEADS=heads, KV_HEADS=kv_heads, GROUP=heads // kv_heads, DIM=dim, BS=bs, BLOCK_M=block_m, BLOCK_N=block_n,
        SPLITS=splits, PRECISION=precision(q), CONTIGUOUS=contiguous, num_warps=warps, num_stages=stages)
    if splits > 1:
        _extend_reduce[(tokens, heads)](part_o, part_ml, out, tokens, out.stride(0), out.stride(1),
                                        HEADS=heads, DIM=dim, SPLITS=splits)
    return out
