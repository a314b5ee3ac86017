"""Fused Triton kernels for the generator's layers, so that a decode step is a few launches per
layer instead of dozens (a 0.5B model's step is launch-bound, not bandwidth-bound):

- `rms_norm`: RMSNorm of a row, optionally after adding the residual stream (written back);
- `rope_store`: rotary positions applied to the queries and keys of a fused qkv projection,
  queries written out contiguous, keys and values written straight into their KV-cache slots;
- `silu_mul`: SwiGLU's silu(gate) * up over a fused gate/up projection.

Their references are the functions of the same names in kb.kernels.fused_ref; they compute in
fp32 and round once at the end, so fp32 results agree to rounding and bf16 ones to bf16's precision.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rms_norm(x_ptr, res_ptr, w_ptr, out_ptr, stride_x, stride_r, stride_o, n, eps,
              HAS_RES: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0)
    if HAS_RES:
        r = tl.load(res_ptr + row * stride_r + offs, mask=mask, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(r.dtype)  # rounded where torch's add rounds
        tl.store(res_ptr + row * stride_r + offs, x, mask=mask)
    xf = x.to(tl.float32)
    inv = tl.rsqrt(tl.sum(xf * xf, 0) / n + eps)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_o + offs, (w * xf * inv).to(out_ptr.dtype.element_ty), mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float,
             residual: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight * norm(x)) or, with `residual`: residual += x in place, then (norm(residual), residual)."""
    n = x.shape[-1]
    out = torch.empty_like(x)
    res = residual if residual is not None else x
    _rms_norm[(x.shape[0],)](x, res, weight, out, x.stride(0), res.stride(0), out.stride(0), n, eps,
                             HAS_RES=residual is not None, BLOCK=triton.next_power_of_2(n))
    return out, residual


@triton.jit
def _rope_store(qkv_ptr, cos_ptr, sin_ptr, q_ptr, kc_ptr, vc_ptr, slot_ptr, stride_t, stride_c,
                HEADS: tl.constexpr, HEADS_P2: tl.constexpr, KV_HEADS: tl.constexpr,
                KV_P2: tl.constexpr, DIM: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    HALF: tl.constexpr = DIM // 2
    d = tl.arange(0, HALF)[None, :]
    c = tl.load(cos_ptr + t * stride_c + d).to(tl.float32)
    s = tl.load(sin_ptr + t * stride_c + d).to(tl.float32)
    row = qkv_ptr + t * stride_t
    # queries: rotated, to a contiguous (tokens, heads, dim) tensor
    h = tl.arange(0, HEADS_P2)[:, None]
    m = h < HEADS
    x1 = tl.load(row + h * DIM + d, mask=m, other=0.0)
    x2 = tl.load(row + h * DIM + HALF + d, mask=m, other=0.0)
    dst = q_ptr + t * HEADS * DIM + h * DIM + d
    dt = q_ptr.dtype.element_ty
    tl.store(dst, (x1.to(tl.float32) * c - x2.to(tl.float32) * s).to(dt), mask=m)
    tl.store(dst + HALF, (x2.to(tl.float32) * c + x1.to(tl.float32) * s).to(dt), mask=m)
    # keys: rotated, into their cache slot; values: copied there
    slot = tl.load(slot_ptr + t).to(tl.int64)
    g = tl.arange(0, KV_P2)[:, None]
    mk = g < KV_HEADS
    kv = kc_ptr.dtype.element_ty
    k1 = tl.load(row + (HEADS + g) * DIM + d, mask=mk, other=0.0)
    k2 = tl.load(row + (HEADS + g) * DIM + HALF + d, mask=mk, other=0.0)
    at = slot * KV_HEADS * DIM + g * DIM + d
    tl.store(kc_ptr + at, (k1.to(tl.float32) * c - k2.to(tl.float32) * s).to(kv), mask=mk)
    tl.store(kc_ptr + at + HALF, (k2.to(tl.float32) * c + k1.to(tl.float32) * s).to(kv), mask=mk)
    vrow = row + (HEADS + KV_HEADS + g) * DIM
    tl.store(vc_ptr + at, tl.load(vrow + d, mask=mk, other=0.0).to(kv), mask=mk)
    tl.store(vc_ptr + at + HALF, tl.load(vrow + HALF + d, mask=mk, other=0.0).to(kv), mask=mk)


def rope_store(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor,
               v_cache: torch.Tensor, slots: torch.Tensor, heads: int, kv_heads: int) -> torch.Tensor:
    """qkv: (tokens, (heads + 2 kv_heads) * dim); cos, sin: (tokens, dim) -> q (tokens, heads, dim)."""
    dim = k_cache.shape[-1]
    assert qkv.stride(1) == 1 and cos.stride(1) == 1 and k_cache.is_contiguous() and v_cache.is_contiguous()
    q = torch.empty((qkv.shape[0], heads, dim), dtype=qkv.dtype, device=qkv.device)
    _rope_store[(qkv.shape[0],)](qkv, cos, sin, q, k_cache, v_cache, slots, qkv.stride(0), cos.stride(0),
                                 HEADS=heads, HEADS_P2=triton.next_power_of_2(heads), KV_HEADS=kv_heads,
                                 KV_P2=triton.next_power_of_2(kv_heads), DIM=dim)
    return q


@triton.jit
def _silu_mul(x_ptr, out_ptr, stride_x, n, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    gate = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0)
    up = tl.load(x_ptr + row * stride_x + n + offs, mask=mask, other=0.0)
    g = gate.to(tl.float32)
    tl.store(out_ptr + row * n + offs, (g / (1 + tl.exp(-g)) * up.to(tl.float32)).to(gate.dtype), mask=mask)


def silu_mul(x: torch.Tensor) -> torch.Tensor:
    """x: (tokens, 2 n) = [gate | up] -> silu(gate) * up, (tokens, n)."""
    n = x.shape[-1] // 2
    out = torch.empty((x.shape[0], n), dtype=x.dtype, device=x.device)
    block = 1024
    _silu_mul[(x.shape[0], triton.cdiv(n, block))](x, out, x.stride(0), n, BLOCK=block)
    return out
