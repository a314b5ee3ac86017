"""Triton kernels for a decode step's layers (1 to 16 tokens): each streams one weight matrix once
and does the work around it in the same launch, so that a layer is six launches (these three, one
of them twice, and the two of decode attention) instead of eleven, and no activation makes a round
trip through memory between a norm and its product:

- `norm_qkv_rope_store`: RMSNorm of the residual stream, the fused q/k/v projection (+ bias),
  rotary positions, queries out, keys and values into their KV-cache slots;
- `linear_residual`: a projection added to the residual stream (attention's output projection,
  the MLP's down projection), a new stream out;
- `norm_gate_up`: RMSNorm, the fused gate/up projection and SwiGLU's silu(gate) * up.

Each program owns a few of the weight's rows and streams them in long loads (a whole row of up to
1,024 columns at a time), so that every SM has enough bytes in flight to draw its share of the
bandwidth; the activations are a few rows that stay in cache. One token (batch-1 decode) is a
multiply-and-sum on the CUDA cores; 2 to 16 are the rows of a tensor-core product (padded to 16).
Rounding follows the unfused layers (Hugging Face's): the norm's output, the projection's, and
silu's are rounded to the model's dtype where those are. References: kb.kernels.decode_layer_ref.

On Hopper each launches as a programmatic dependent (kb.kernels.paged_attention.dependent), as do
the decode attention kernels: a kernel starts while the one before it ends and loads its first
weights, then waits for the results it reads. H200, a 0.5B-shaped decode step's CUDA graph: 0.753
-> 0.652 ms, the same tokens (bench/generate.py --only a, 2026-12-04; the logits bit for bit too).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kb.kernels.paged_attention import dependent, precision, wait_for_previous

MAX_TOKENS = 16  # tokens a launch takes: the rows of one tensor-core tile
# Launch settings swept on an H200 (Qwen2.5-0.5B shapes, one token; .scratch sweep, 2026-12-03):
# us a call, fused against the unfused ops it replaces: qkv 3.2 vs 6.6 (4 rows of each half, whole
# 1,024-column loads), output projection 2.2 vs 5.9, gate/up 5.8 vs 8.0 (16 rows, 256 columns), down
# projection 3.5 vs 6.0 (8 rows, 1,024 columns, 8 warps). Re-swept as dependent launches, in the
# whole decode graph (2026-12-04): qkv 8 rows of each half (was 4), gate/up 8 rows (was 16), the
# output and down projections 4 rows (was 8): 0.656 -> 0.643 ms in three alternations, same tokens.
# The norms' sums of squares in one load (`_rms_k`; gate/up's took four): 0.636-0.643 -> 0.624 ms in
# four alternations, same tokens (2026-12-04, eighth session).


def _tiles(tokens: int, k: int, block_k: int = 0) -> tuple[int, int]:
    """(token rows, columns per load): one token streams rows of up to 1,024 columns at a time."""
    if tokens == 1:
        return 1, block_k or min(triton.next_power_of_2(k), 1024)
    return MAX_TOKENS, block_k or 256


def _rms_k(m_p2: int, k: int, block_k: int) -> int:
    """Columns a load of the norm's sum of squares takes: the whole row where it fits (one token),
    so that the sum waits on one load, not one a tile (gate/up's 256-column tiles: four)."""
    return max(block_k, min(triton.next_power_of_2(k), 4096 // m_p2))


@triton.jit
def _inverse_rms(x_ptr, stride_x, m, live_m, K, eps, M_P2: tl.constexpr, BLOCK_K: tl.constexpr):
    """1 / rms of each of the (up to M_P2) rows of x, in fp32."""
    total = tl.zeros([M_P2], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + m[:, None] * stride_x + k[None, :], mask=live_m[:, None] & (k[None, :] < K), other=0.0)
        xf = x.to(tl.float32)
        total += tl.sum(xf * xf, 1)
    return tl.rsqrt(total / K + eps)


@triton.jit
def _tile(ptr, stride, rows, live, k0, K, BLOCK_K: tl.constexpr):
    """Rows `rows` (where `live`) of a row-major matrix, columns k0 .. k0 + BLOCK_K (zero past K)."""
    k = k0 + tl.arange(0, BLOCK_K)
    return tl.load(ptr + rows[:, None] * stride + k[None, :], mask=live[:, None] & (k[None, :] < K), other=0.0)


@triton.jit
def _normed(x_ptr, nw_ptr, stride_x, m, live_m, k, K, inv, dtype):
    """Rows m, columns k of weight * norm(x), rounded as RMSNorm's are (to `dtype`, then times
    the weight)."""
    x = tl.load(x_ptr + m[:, None] * stride_x + k[None, :], mask=live_m[:, None] & (k[None, :] < K), other=0.0)
    w = tl.load(nw_ptr + k, mask=k < K, other=0.0)
    return (w[None, :].to(tl.float32) * (x.to(tl.float32) * inv[:, None]).to(dtype).to(tl.float32)).to(dtype)


@triton.jit
def _start(M_P2: tl.constexpr, N: tl.constexpr, BLOCK_K: tl.constexpr):
    """An accumulator of x @ w.T for N weight rows: for one token, the elementwise products of each
    load (summed once, by `_finish`, not once a load); for a 16-row tile, the product's tile."""
    if M_P2 == 1:
        return tl.zeros([N, BLOCK_K], tl.float32)
    else:
        return tl.zeros([M_P2, N], tl.float32)


@triton.jit
def _add(acc, x, w, PRECISION: tl.constexpr):
    """acc + this load's part of x (tokens, k) @ w (n, k).T."""
    if x.shape[0] == 1:
        return acc + w.to(tl.float32) * x.to(tl.float32)
    else:
        return tl.dot(x, tl.trans(w), acc, input_precision=PRECISION)


@triton.jit
def _finish(acc, M_P2: tl.constexpr):
    """The (tokens, n) product."""
    if M_P2 == 1:
        return tl.sum(acc, 1)[None, :]
    else:
        return acc


@triton.jit
def _normed_products(x_ptr, nw_ptr, w_ptr, stride_x, m, live_m, rows_a, rows_b, live_rows, K, eps, dtype,
                     M_P2: tl.constexpr, N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
                     PDL: tl.constexpr, RMS_K: tl.constexpr):
    """RMSNorm of x's rows m, times two sets of N weight rows (each K wide): the two (tokens, N)
    products. The first weight tiles stream in before the wait for the kernel before this one."""
    wa = _tile(w_ptr, K, rows_a, live_rows, 0, K, BLOCK_K)
    wb = _tile(w_ptr, K, rows_b, live_rows, 0, K, BLOCK_K)
    wait_for_previous(PDL)
    inv = _inverse_rms(x_ptr, stride_x, m, live_m, K, eps, M_P2, RMS_K)
    xn = _normed(x_ptr, nw_ptr, stride_x, m, live_m, tl.arange(0, BLOCK_K), K, inv, dtype)
    a = _add(_start(M_P2, N, BLOCK_K), xn, wa, PRECISION)
    b = _add(_start(M_P2, N, BLOCK_K), xn, wb, PRECISION)
    for k0 in range(BLOCK_K, K, BLOCK_K):
        xn = _normed(x_ptr, nw_ptr, stride_x, m, live_m, k0 + tl.arange(0, BLOCK_K), K, inv, dtype)
        a = _add(a, xn, _tile(w_ptr, K, rows_a, live_rows, k0, K, BLOCK_K), PRECISION)
        b = _add(b, xn, _tile(w_ptr, K, rows_b, live_rows, k0, K, BLOCK_K), PRECISION)
    return _finish(a, M_P2), _finish(b, M_P2)


@triton.jit
def _norm_qkv_rope_store(x_ptr, nw_ptr, w_ptr, b_ptr, cos_ptr, sin_ptr, q_ptr, kc_ptr, vc_ptr, slot_ptr,
                         M, K, eps, stride_x, stride_c,
                         HEADS: tl.constexpr, KV_HEADS: tl.constexpr, DIM: tl.constexpr, HB: tl.constexpr,
                         M_P2: tl.constexpr, BLOCK_K: tl.constexpr, HAS_BIAS: tl.constexpr,
                         PRECISION: tl.constexpr, PDL: tl.constexpr, RMS_K: tl.constexpr):
    """Program: HB rows of each half of one head (q, k or v) of the fused projection."""
    HALF: tl.constexpr = DIM // 2
    pid = tl.program_id(0)
    head = pid // (HALF // HB)
    d = (pid % (HALF // HB)) * HB + tl.arange(0, HB)  # this program's columns of each half
    rows = head * DIM + d
    m = tl.arange(0, M_P2)
    live_m = m < M
    dtype = w_ptr.dtype.element_ty
    acc1, acc2 = _normed_products(x_ptr, nw_ptr, w_ptr, stride_x, m, live_m, rows, rows + HALF, rows >= 0, K, eps,
                                  dtype, M_P2, HB, BLOCK_K, PRECISION, PDL, RMS_K)
    if HAS_BIAS:
        acc1 += tl.load(b_ptr + rows).to(tl.float32)[None, :]
        acc2 += tl.load(b_ptr + rows + HALF).to(tl.float32)[None, :]
    x1 = acc1.to(dtype).to(tl.float32)  # the projection's output, rounded as the unfused one is
    x2 = acc2.to(dtype).to(tl.float32)
    if head < HEADS + KV_HEADS:  # queries and keys are rotated
        c = tl.load(cos_ptr + m[:, None] * stride_c + d[None, :], mask=live_m[:, None], other=0.0).to(tl.float32)
        s = tl.load(sin_ptr + m[:, None] * stride_c + d[None, :], mask=live_m[:, None], other=0.0).to(tl.float32)
        x1, x2 = x1 * c - x2 * s, x2 * c + x1 * s
    _store_head(x1, x2, head, d, m, live_m, q_ptr, kc_ptr, vc_ptr, slot_ptr, HEADS, KV_HEADS, DIM)


@triton.jit
def _store_head(x1, x2, head, d, m, live_m, q_ptr, kc_ptr, vc_ptr, slot_ptr,
                HEADS: tl.constexpr, KV_HEADS: tl.constexpr, DIM: tl.constexpr):
    """Columns d of both halves of one head: a query's to q, a key's or value's to the tokens' slots."""
    HALF: tl.constexpr = DIM // 2
    if head < HEADS:
        dst = q_ptr + (m[:, None] * HEADS + head) * DIM + d[None, :]
        tl.store(dst, x1.to(q_ptr.dtype.element_ty), mask=live_m[:, None])
        tl.store(dst + HALF, x2.to(q_ptr.dtype.element_ty), mask=live_m[:, None])
    else:
        slot = tl.load(slot_ptr + m, mask=live_m, other=0).to(tl.int64)
        kv = head - HEADS
        cache = kc_ptr
        if kv >= KV_HEADS:
            kv -= KV_HEADS
            cache = vc_ptr
        dst = cache + (slot[:, None] * KV_HEADS + kv) * DIM + d[None, :]
        tl.store(dst, x1.to(kc_ptr.dtype.element_ty), mask=live_m[:, None])
        tl.store(dst + HALF, x2.to(kc_ptr.dtype.element_ty), mask=live_m[:, None])


def norm_qkv_rope_store(x, norm_weight, eps: float, weight, bias, cos, sin, k_cache, v_cache, slots,
                        heads: int, kv_heads: int, rows: int = 0, block_k: int = 0, warps: int = 4,
                        stages: int = 3) -> torch.Tensor:
    """x: (tokens, hidden), the residual stream; weight: ((heads + 2 kv_heads) * dim, hidden) ->
    rotated queries (tokens, heads, dim); rotated keys and the values go to their `slots`."""
    tokens, hidden = x.shape
    dim = k_cache.shape[-1]
    assert tokens <= MAX_TOKENS and x.stride(1) == 1 and cos.stride(1) == 1 and weight.is_contiguous()
    assert k_cache.is_contiguous() and v_cache.is_contiguous()
    q = torch.empty((tokens, heads, dim), dtype=x.dtype, device=x.device)
    m_p2, block_k = _tiles(tokens, hidden, block_k)
    pdl = dependent(x)
    hb = min(dim // 2, rows or (8 if m_p2 == 1 else 16))  # rows of each half per program (a product's: 16)
    grid = ((heads + 2 * kv_heads) * (dim // 2 // hb),)
    _norm_qkv_rope_store[grid](x, norm_weight, weight, bias if bias is not None else weight, cos, sin, q,
                               k_cache, v_cache, slots, tokens, hidden, eps, x.stride(0), cos.stride(0),
                               HEADS=heads, KV_HEADS=kv_heads, DIM=dim, HB=hb, M_P2=m_p2, BLOCK_K=block_k,
                               HAS_BIAS=bias is not None, PRECISION=precision(x), PDL=pdl,
                               RMS_K=_rms_k(m_p2, hidden, block_k), num_warps=warps, num_stages=stages,
                               launch_pdl=pdl)
    return q


@triton.jit
def _linear_residual(x_ptr, w_ptr, r_ptr, out_ptr, M, N, K, stride_x, stride_r,
                     M_P2: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
                     PDL: tl.constexpr):
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.arange(0, M_P2)
    live_m, live_n = m < M, n < N
    w = _tile(w_ptr, K, n, live_n, 0, K, BLOCK_K)  # the first weights stream in while the last kernel ends
    wait_for_previous(PDL)
    acc = _add(_start(M_P2, BLOCK_N, BLOCK_K), _tile(x_ptr, stride_x, m, live_m, 0, K, BLOCK_K), w, PRECISION)
    for k0 in range(BLOCK_K, K, BLOCK_K):
        acc = _add(acc, _tile(x_ptr, stride_x, m, live_m, k0, K, BLOCK_K), _tile(w_ptr, K, n, live_n, k0, K, BLOCK_K),
                   PRECISION)
    acc = _finish(acc, M_P2)
    live = live_m[:, None] & live_n[None, :]
    r = tl.load(r_ptr + m[:, None] * stride_r + n[None, :], mask=live, other=0.0)
    tl.store(out_ptr + m[:, None] * N + n[None, :], (r.to(tl.float32) + acc).to(out_ptr.dtype.element_ty), mask=live)


def linear_residual(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor, rows: int = 0,
                    block_k: int = 0, warps: int = 4, stages: int = 3) -> torch.Tensor:
    """residual + x @ weight.T: x (tokens, k), weight (n, k), residual (tokens, n) -> a new (tokens, n)."""
    tokens, k = x.shape
    n = weight.shape[0]
    assert tokens <= MAX_TOKENS and x.stride(1) == 1 and residual.stride(1) == 1 and weight.is_contiguous()
    out = torch.empty((tokens, n), dtype=residual.dtype, device=x.device)
    m_p2, block_k = _tiles(tokens, k, block_k)
    pdl = dependent(x)
    block_n = rows or (4 if m_p2 == 1 else 16)
    warps = 8 if m_p2 == 1 and k > 2048 and warps == 4 else warps  # a long row (the down projection)
    _linear_residual[(triton.cdiv(n, block_n),)](x, weight, residual, out, tokens, n, k, x.stride(0),
                                                 residual.stride(0), M_P2=m_p2, BLOCK_N=block_n, BLOCK_K=block_k,
                                                 PRECISION=precision(x), PDL=pdl, num_warps=warps,
                                                 num_stages=stages, launch_pdl=pdl)
    return out


@triton.jit
def _norm_gate_up(x_ptr, nw_ptr, w_ptr, out_ptr, M, N, K, eps, stride_x,
                  M_P2: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
                  PDL: tl.constexpr, RMS_K: tl.constexpr):
    """Program: BLOCK_N columns of the gate and the same of up (rows n and N + n of the weight)."""
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.arange(0, M_P2)
    live_m, live_n = m < M, n < N
    dtype = w_ptr.dtype.element_ty
    gate, up = _normed_products(x_ptr, nw_ptr, w_ptr, stride_x, m, live_m, n, N + n, live_n, K, eps, dtype, M_P2,
                                BLOCK_N, BLOCK_K, PRECISION, PDL, RMS_K)
    g = gate.to(dtype).to(tl.float32)  # rounded as the projection's output is
    u = up.to(dtype).to(tl.float32)
    act = (g / (1 + tl.exp(-g))).to(dtype).to(tl.float32) * u  # silu rounded, as torch's is
    tl.store(out_ptr + m[:, None] * N + n[None, :], act.to(dtype), mask=live_m[:, None] & live_n[None, :])


def norm_gate_up(x: torch.Tensor, norm_weight: torch.Tensor, eps: float, weight: torch.Tensor, rows: int = 0,
                 block_k: int = 0, warps: int = 4, stages: int = 3) -> torch.Tensor:
    """x: (tokens, hidden), the residual stream; weight: (2 n, hidden) = [gate; up] -> silu(gate) * up
    of norm(x), (tokens, n)."""
    tokens, k = x.shape
    n = weight.shape[0] // 2
    assert tokens <= MAX_TOKENS and x.stride(1) == 1 and weight.is_contiguous()
    out = torch.empty((tokens, n), dtype=x.dtype, device=x.device)
    m_p2, block_k = _tiles(tokens, k, block_k or 256)
    pdl = dependent(x)
    block_n = rows or (8 if m_p2 == 1 else 16)
    _norm_gate_up[(triton.cdiv(n, block_n),)](x, norm_weight, weight, out, tokens, n, k, eps, x.stride(0),
                                              M_P2=m_p2, BLOCK_N=block_n, BLOCK_K=block_k,
                                              PRECISION=precision(x), PDL=pdl, RMS_K=_rms_k(m_p2, k, block_k),
                                              num_warps=warps, num_stages=stages, launch_pdl=pdl)
    return out
