"""Plain-torch references of kb.kernels.fused, one function per kernel with the same arguments and
results. They are also the decoder's layers on the CPU (kb.rag.decoder runs whichever of the two
modules its attention backend names), so they compute exactly as Hugging Face's Llama does:
RMSNorm in fp32 rounded once, rotary positions in the model's dtype.
"""

from __future__ import annotations

import torch

from kb.kernels.paged_attention_ref import store_kv


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float,
             residual: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x: (tokens, n) -> (weight * norm(x), None); with `residual`: (norm(x + residual), x +
    residual), the updated residual stream (a new tensor here; the kernel updates it in place)."""
    if residual is not None:
        residual = x = x + residual
    dtype = x.dtype
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(dtype), residual


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (tokens, heads, head_dim); cos, sin: (tokens, head_dim). Rotates the two halves."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, None] + rotated * sin[:, None]


def split_rotate(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int, kv_heads: int):
    """A fused qkv projection -> rotated q (tokens, heads, dim), rotated k and v (tokens, kv_heads, dim)."""
    dim = cos.shape[-1]
    q, k, v = qkv.split([heads * dim, kv_heads * dim, kv_heads * dim], dim=-1)
    return (rotate(q.view(-1, heads, dim), cos, sin), rotate(k.view(-1, kv_heads, dim), cos, sin),
            v.view(-1, kv_heads, dim))


def rope_store(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor,
               v_cache: torch.Tensor, slots: torch.Tensor, heads: int, kv_heads: int) -> torch.Tensor:
    """qkv: (tokens, (heads + 2 kv_heads) * dim); cos, sin: (tokens, dim) -> rotated q (tokens,
    heads, dim); the rotated keys and the values are written to their `slots` of the cache."""
    q, k, v = split_rotate(qkv, cos, sin, heads, kv_heads)
    store_kv(k_cache, v_cache, k, v, slots)
    return q


def silu_mul(x: torch.Tensor) -> torch.Tensor:
    """x: (tokens, 2 n) = [gate | up] -> silu(gate) * up, (tokens, n)."""
    gate, up = x.chunk(2, dim=-1)
    return torch.nn.functional.silu(gate) * up
