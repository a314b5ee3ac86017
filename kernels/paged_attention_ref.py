"""Plain-torch references of kb.kernels.paged_attention: what its kernels must compute, written
for clarity (a loop over sequences). They are also the generator's CPU path (kb.rag.attention's
torch backend), so they take the same plain tensors as the kernels.

A layer's cache is (blocks, block_size, kv_heads, dim); a token's slot = block * block_size +
offset; `block_tables` is (seqs, max blocks) int32, each row a sequence's blocks in order.
"""

from __future__ import annotations

import torch


def store_kv(k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             slots: torch.Tensor) -> None:
    """k, v: (tokens, kv_heads, dim) -> their `slots` (tokens,) int64 of k_cache, v_cache."""
    k_cache.view(-1, *k_cache.shape[2:])[slots] = k.to(k_cache.dtype)
    v_cache.view(-1, *v_cache.shape[2:])[slots] = v.to(v_cache.dtype)


def attend(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
           q_lens: list[int], ctx_lens: list[int], scale: float) -> torch.Tensor:
    """q: (tokens, heads, dim), each sequence's `q_lens[i]` new queries back to back, the last of
    them at position `ctx_lens[i] - 1` -> (tokens, heads, dim). Each query sees every cached key
    of its sequence up to its own position (what `extend` and `decode` compute): gather the
    sequence's blocks into contiguous keys and values, then SDPA with the causal offset."""
    bs = k_cache.shape[1]
    out = torch.empty_like(q)
    start = 0
    for i, (ql, n) in enumerate(zip(q_lens, ctx_lens)):
        blocks = block_tables[i, :(n + bs - 1) // bs].long()
        k = k_cache[blocks].flatten(0, 1)[:n]  # (n, kv_heads, dim)
        v = v_cache[blocks].flatten(0, 1)[:n]
        qs = q[start:start + ql]
        # query j sits at position n - ql + j and sees keys 0 .. n - ql + j
        mask = torch.arange(n, device=q.device)[None] <= (n - ql + torch.arange(ql, device=q.device))[:, None]
        o = torch.nn.functional.scaled_dot_product_attention(
            qs.transpose(0, 1), k.transpose(0, 1).to(q.dtype), v.transpose(0, 1).to(q.dtype),
            attn_mask=mask, scale=scale, enable_gqa=True)
        out[start:start + ql] = o.transpose(0, 1)
        start += ql
    return out
