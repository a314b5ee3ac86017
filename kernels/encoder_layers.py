"""Triton kernels for kb's packed encoder (kb.embed.packed): sequences of different lengths lie
back to back in one (tokens, features) tensor, `cu` (int32, n + 1) marks where each one starts,
and nothing is padded anywhere.

- `varlen_attention`: bidirectional flash attention (online softmax) of each sequence with itself,
  reading queries, keys and values straight out of the fused qkv projection; MPNet's relative
  position bias is computed inside the kernel from its bucket table;
- `embed_layer_norm`: word + position + token-type embeddings, then LayerNorm, one pass;
- `add_layer_norm`: LayerNorm(x + residual), BERT's post-norm, one pass;
- `linear`: x @ w.T + b with GELU fused into the epilogue (the FFN's up projection);
- `mean_pool`: mean of each sequence's rows, L2-normalised, in fp32.

Each kernel's plain-torch reference is the function of the same name in kb.kernels.encoder_layers_ref;
tests compare them on random ragged inputs. All of them accumulate in fp32.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from kb.kernels.paged_attention import precision

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _rel_bucket(rel, NUM_BUCKETS: tl.constexpr, MAX_DISTANCE: tl.constexpr):
    """MPNet/T5's bidirectional relative-position bucket of `rel` = key position - query position."""
    HALF: tl.constexpr = NUM_BUCKETS // 2
    EXACT: tl.constexpr = HALF // 2
    n = -rel
    ret = tl.where(n < 0, HALF, 0)
    n = tl.abs(n)
    nf = tl.maximum(n.to(tl.float32), 1.0)
    large = EXACT + (tl.log(nf / EXACT) / math.log(MAX_DISTANCE / EXACT) * (HALF - EXACT)).to(tl.int32)
    large = tl.minimum(large, HALF - 1)
    return ret + tl.where(n < EXACT, n, large)


@triton.jit
def _attend_keys(qkv_ptr, bias_ptr, q, offs_m, offs_d, n0, end, h, m_i, l_i, acc, qk_scale, stride_t,
                 HEADS: tl.constexpr, DIM: tl.constexpr, BLOCK_N: tl.constexpr, HAS_BIAS: tl.constexpr,
                 NUM_BUCKETS: tl.constexpr, MAX_DISTANCE: tl.constexpr, PRECISION: tl.constexpr):
    """One tile of keys: the scores, then the running max, sum and output brought up to date."""
    offs_n = n0 + tl.arange(0, BLOCK_N)
    live = offs_n < end
    kv_row = offs_n[:, None].to(tl.int64) * stride_t + h * DIM + offs_d[None, :]
    k = tl.load(qkv_ptr + kv_row + HEADS * DIM, mask=live[:, None], other=0.0)
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
    if HAS_BIAS:
        bucket = _rel_bucket(offs_n[None, :] - offs_m[:, None], NUM_BUCKETS, MAX_DISTANCE)
        s += tl.load(bias_ptr + bucket * HEADS + h).to(tl.float32) * 1.4426950408889634
    s = tl.where(live[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))  # finite: every tile has a live key
    p = tl.exp2(s - m_new[:, None])
    alpha = tl.exp2(m_i - m_new)
    v = tl.load(qkv_ptr + kv_row + 2 * HEADS * DIM, mask=live[:, None], other=0.0)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return m_new, l_i * alpha + tl.sum(p, 1), acc


@triton.jit
def _varlen_attention(qkv_ptr, o_ptr, cu_ptr, tile_seq_ptr, tile_m_ptr, bias_ptr, scale, stride_t, stride_o,
                      HEADS: tl.constexpr, DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      HAS_BIAS: tl.constexpr, NUM_BUCKETS: tl.constexpr, MAX_DISTANCE: tl.constexpr,
                      WHILE: tl.constexpr, PRECISION: tl.constexpr):
    tile, h = tl.program_id(0), tl.program_id(1)
    seq = tl.load(tile_seq_ptr + tile)
    if seq < 0:  # an unused program of a padded grid
        return
    start = tl.load(cu_ptr + seq)
    end = tl.load(cu_ptr + seq + 1)
    offs_m = start + tl.load(tile_m_ptr + tile) + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, DIM)
    rows = offs_m < end
    q = tl.load(qkv_ptr + offs_m[:, None].to(tl.int64) * stride_t + h * DIM + offs_d[None, :],
                mask=rows[:, None], other=0.0)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, DIM), tl.float32)
    qk_scale = scale * 1.4426950408889634  # softmax in base 2
    if WHILE:  # the interpreter cannot take a loop bound loaded from memory
        n0 = start
        while n0 < end:
            m_i, l_i, acc = _attend_keys(qkv_ptr, bias_ptr, q, offs_m, offs_d, n0, end, h, m_i, l_i, acc, qk_scale,
                                         stride_t, HEADS, DIM, BLOCK_N, HAS_BIAS, NUM_BUCKETS, MAX_DISTANCE,
                                         PRECISION)
            n0 += BLOCK_N
    else:
        for n0 in range(start, end, BLOCK_N):
            m_i, l_i, acc = _attend_keys(qkv_ptr, bias_ptr, q, offs_m, offs_d, n0, end, h, m_i, l_i, acc, qk_scale,
                                         stride_t, HEADS, DIM, BLOCK_N, HAS_BIAS, NUM_BUCKETS, MAX_DISTANCE,
                                         PRECISION)
    out = acc / l_i[:, None]
    tl.store(o_ptr + offs_m[:, None].to(tl.int64) * stride_o + h * DIM + offs_d[None, :],
             out.to(o_ptr.dtype.element_ty), mask=rows[:, None])


def attention_tiles(lengths: list[int], block_m: int) -> tuple[list[int], list[int]]:
    """(sequence, first query row) of each BLOCK_M tile of queries: the attention kernel's grid."""
    seqs, starts = [], []
    for i, n in enumerate(lengths):
        for m in range(0, n, block_m):
            seqs.append(i)
            starts.append(m)
    return seqs, starts


def varlen_attention(qkv: torch.Tensor, cu: torch.Tensor, tiles: tuple[torch.Tensor, torch.Tensor],
                     heads: int, rel_bias: torch.Tensor | None = None, num_buckets: int = 32,
                     max_distance: int = 128, block_m: int = 64, block_n: int = 64, warps: int | None = None,
                     stages: int | None = None) -> torch.Tensor:
    """qkv: (tokens, 3 * heads * dim) = [q | k | v], heads side by side; cu: (n + 1,) int32;
    tiles: `attention_tiles(lengths, block_m)` as int32 tensors on qkv's device;
    rel_bias: MPNet's (num_buckets, heads) table or None -> (tokens, heads * dim).
    block_m/block_n: queries/keys per tile; warps, stages: Triton's num_warps, num_stages."""
    tokens, width = qkv.shape
    dim = width // (3 * heads)
    assert qkv.stride(1) == 1 and dim * 3 * heads == width
    out = torch.empty((tokens, heads * dim), dtype=qkv.dtype, device=qkv.device)
    tile_seq, tile_m = tiles
    bias = rel_bias if rel_bias is not None else qkv
    _varlen_attention[(tile_seq.numel(), heads)](
        qkv, out, cu, tile_seq, tile_m, bias, 1.0 / math.sqrt(dim), qkv.stride(0), out.stride(0),
        HEADS=heads, DIM=dim, BLOCK_M=block_m, BLOCK_N=block_n, HAS_BIAS=rel_bias is not None,
        NUM_BUCKETS=num_buckets, MAX_DISTANCE=max_distance, WHILE=INTERPRET, PRECISION=precision(qkv),
        num_warps=warps or (4 if block_m <= 64 else 8), **({"num_stages": stages} if stages else {}))
    return out


@triton.jit
def _layer_norm_rows(x, w_ptr, b_ptr, offs_n, cols, n, eps):
    """LayerNorm of a (rows, BLOCK_N) fp32 tile whose columns past `n` are zero."""
    mean = tl.sum(x, 1) / n
    xc = tl.where(cols[None, :], x - mean[:, None], 0.0)
    inv = tl.rsqrt(tl.sum(xc * xc, 1) / n + eps)
    w = tl.load(w_ptr + offs_n, mask=cols, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + offs_n, mask=cols, other=0.0).to(tl.float32)
    return xc * inv[:, None] * w[None, :] + b[None, :]


@triton.jit
def _add_layer_norm(x_ptr, r_ptr, w_ptr, b_ptr, out_ptr, n_rows, n, eps,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    cols = offs_n < n
    mask = (offs_m[:, None] < n_rows) & cols[None, :]
    at = offs_m[:, None].to(tl.int64) * n + offs_n[None, :]
    x = tl.load(x_ptr + at, mask=mask, other=0.0).to(tl.float32) + tl.load(r_ptr + at, mask=mask, other=0.0).to(tl.float32)
    y = _layer_norm_rows(x, w_ptr, b_ptr, offs_n, cols, n, eps)
    tl.store(out_ptr + at, y.to(out_ptr.dtype.element_ty), mask=mask)


def add_layer_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                   eps: float) -> torch.Tensor:
    """LayerNorm(x + residual), both (tokens, n) contiguous."""
    assert x.is_contiguous() and residual.is_contiguous()
    rows, n = x.shape
    out = torch.empty_like(x)
    block_n = triton.next_power_of_2(n)
    block_m = max(1, 4096 // block_n)
    _add_layer_norm[(triton.cdiv(rows, block_m),)](x, residual, weight, bias, out, rows, n, eps,
                                                   BLOCK_M=block_m, BLOCK_N=block_n, num_warps=4)
    return out


@triton.jit
def _embed_layer_norm(ids_ptr, pos_ptr, word_ptr, posw_ptr, type_ptr, w_ptr, b_ptr, out_ptr, n_rows, n, eps,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    cols = offs_n < n
    rows = offs_m < n_rows
    mask = rows[:, None] & cols[None, :]
    ids = tl.load(ids_ptr + offs_m, mask=rows, other=0).to(tl.int64)
    pos = tl.load(pos_ptr + offs_m, mask=rows, other=0).to(tl.int64)
    x = tl.load(word_ptr + ids[:, None] * n + offs_n[None, :], mask=mask, other=0.0).to(tl.float32)
    x += tl.load(posw_ptr + pos[:, None] * n + offs_n[None, :], mask=mask, other=0.0).to(tl.float32)
    x += tl.load(type_ptr + offs_n, mask=cols, other=0.0).to(tl.float32)[None, :]
    y = _layer_norm_rows(x, w_ptr, b_ptr, offs_n, cols, n, eps)
    tl.store(out_ptr + offs_m[:, None].to(tl.int64) * n + offs_n[None, :], y.to(out_ptr.dtype.element_ty),
             mask=mask)


def embed_layer_norm(ids: torch.Tensor, positions: torch.Tensor, word: torch.Tensor, pos: torch.Tensor,
                     token_type: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm(word[ids] + pos[positions] + token_type) -> (tokens, n); token_type: (n,) (type 0's row)."""
    rows, n = ids.numel(), word.shape[1]
    out = torch.empty((rows, n), dtype=word.dtype, device=word.device)
    block_n = triton.next_power_of_2(n)
    block_m = max(1, 4096 // block_n)
    _embed_layer_norm[(triton.cdiv(rows, block_m),)](ids, positions, word, pos, token_type, weight, bias, out,
                                                     rows, n, eps, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=4)
    return out


@triton.jit
def _linear(x_ptr, w_ptr, b_ptr, out_ptr, M, N, stride_x, stride_w, stride_o, K: tl.constexpr, GELU: tl.constexpr,
            PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP: tl.constexpr):
    pid = tl.program_id(0)
    grid_m, grid_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    # grouped order: programs running together share tiles of x in L2
    group = pid // (GROUP * grid_n)
    first_m = group * GROUP
    size = tl.minimum(grid_m - first_m, GROUP)
    pid_m = first_m + (pid % (GROUP * grid_n)) % size
    pid_n = (pid % (GROUP * grid_n)) // size
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    xs = x_ptr + offs_m[:, None].to(tl.int64) * stride_x + offs_k[None, :]
    ws = w_ptr + offs_n[None, :].to(tl.int64) * stride_w + offs_k[:, None]
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        a = tl.load(xs, mask=(offs_m[:, None] < M) & (offs_k[None, :] + k0 < K), other=0.0)
        b = tl.load(ws, mask=(offs_n[None, :] < N) & (offs_k[:, None] + k0 < K), other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        xs += BLOCK_K
        ws += BLOCK_K
    acc += tl.load(b_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    if GELU:  # exact (erf) GELU, as BERT's "gelu"
        acc = 0.5 * acc * (1.0 + tl.erf(acc * 0.7071067811865476))
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(out_ptr + offs_m[:, None].to(tl.int64) * stride_o + offs_n[None, :],
             acc.to(out_ptr.dtype.element_ty), mask=mask)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, gelu: bool = False,
           block: tuple[int, int, int] = (128, 128, 64), warps: int = 8, stages: int = 3) -> torch.Tensor:
    """x @ weight.T + bias, then GELU if asked: x (M, K), weight (N, K) as nn.Linear keeps it."""
    M, K = x.shape
    N = weight.shape[0]
    assert x.stride(1) == 1 and weight.stride(1) == 1
    out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    bm, bn, bk = block
    _linear[(triton.cdiv(M, bm) * triton.cdiv(N, bn),)](
        x, weight, bias, out, M, N, x.stride(0), weight.stride(0), out.stride(0), K=K, GELU=gelu, PRECISION=precision(x),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP=8, num_warps=warps, num_stages=stages)
    return out


@triton.jit
def _row_sum(x_ptr, t0, end, offs_n, cols, n, BLOCK_T: tl.constexpr):
    offs_t = t0 + tl.arange(0, BLOCK_T)
    mask = (offs_t[:, None] < end) & cols[None, :]
    x = tl.load(x_ptr + offs_t[:, None].to(tl.int64) * n + offs_n[None, :], mask=mask, other=0.0)
    return tl.sum(x.to(tl.float32), 0)


@triton.jit
def _mean_pool(x_ptr, cu_ptr, out_ptr, n, NORMALIZE: tl.constexpr, BLOCK_T: tl.constexpr,
               BLOCK_N: tl.constexpr, WHILE: tl.constexpr):
    seq = tl.program_id(0)
    start = tl.load(cu_ptr + seq)
    end = tl.load(cu_ptr + seq + 1)
    offs_n = tl.arange(0, BLOCK_N)
    cols = offs_n < n
    acc = tl.zeros((BLOCK_N,), tl.float32)
    if WHILE:
        t0 = start
        while t0 < end:
            acc += _row_sum(x_ptr, t0, end, offs_n, cols, n, BLOCK_T)
            t0 += BLOCK_T
    else:
        for t0 in range(start, end, BLOCK_T):
            acc += _row_sum(x_ptr, t0, end, offs_n, cols, n, BLOCK_T)
    acc = acc / tl.maximum(end - start, 1).to(tl.float32)
    if NORMALIZE:
        acc = acc / tl.maximum(tl.sqrt(tl.sum(acc * acc, 0)), 1e-12)
    tl.store(out_ptr + seq * n + offs_n, acc, mask=cols)


def mean_pool(x: torch.Tensor, cu: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """(tokens, n) -> (sequences, n) fp32: each sequence's mean row, L2-normalised if asked."""
    assert x.is_contiguous()
    seqs, n = cu.numel() - 1, x.shape[1]
    out = torch.empty((seqs, n), dtype=torch.float32, device=x.device)
    _mean_pool[(seqs,)](x, cu, out, n, NORMALIZE=normalize, BLOCK_T=32, BLOCK_N=triton.next_power_of_2(n),
                        WHILE=INTERPRET)
    return out
