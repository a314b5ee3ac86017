"""Attention over the paged KV cache, for a flat batch of sequences.

A step's batch is described by `Batch`: for each sequence, how many new tokens it brings (its
queries, back to back in the flat token dimension), how long its context is once they are added,
and its block table. New keys and values are first written to their slots, then each query
attends to every cached token of its sequence up to its own position (causal within the new
tokens). One interface, two backends chosen once: `torch` (gather + SDPA: the CPU path and the
oracle) and `triton` (kb.kernels, on the GPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    q_lens: list[int]  # new tokens per sequence
    ctx_lens: list[int]  # cached + new tokens per sequence
    block_tables: torch.Tensor  # (seqs, max blocks) int32, padded with 0
    slots: torch.Tensor  # (tokens,) int64: where each new token's k and v go
    cu_q: torch.Tensor  # (seqs + 1,) int32: offsets of each sequence's queries
    ctx: torch.Tensor  # (seqs,) int32: ctx_lens on the device
    max_ctx: int = 0  # fixes the decode kernel's grid for any context up to it (CUDA graphs); 0: this batch's

    @property
    def decode(self) -> bool:
        return all(n == 1 for n in self.q_lens)

    @classmethod
    def build(cls, q_lens: list[int], ctx_lens: list[int], tables: list[list[int]], block_size: int,
              device: torch.device) -> "Batch":
        width = max(len(t) for t in tables)
        table = torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32)
        slots = []
        for q, n, t in zip(q_lens, ctx_lens, tables):
            slots += [t[p // block_size] * block_size + p % block_size for p in range(n - q, n)]
        cu = [0]
        for q in q_lens:
            cu.append(cu[-1] + q)
        return cls(q_lens, ctx_lens, table.to(device), torch.tensor(slots, dtype=torch.int64).to(device),
                   torch.tensor(cu, dtype=torch.int32).to(device), torch.tensor(ctx_lens, dtype=torch.int32).to(device))


def store_kv(k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             slots: torch.Tensor) -> None:
    """k_cache: (blocks, block_size, kv_heads, dim) of one layer; k: (tokens, kv_heads, dim)."""
    k_cache.view(-1, *k_cache.shape[2:])[slots] = k.to(k_cache.dtype)
    v_cache.view(-1, *v_cache.shape[2:])[slots] = v.to(v_cache.dtype)


def attend_torch(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, batch: Batch,
                 scale: float) -> torch.Tensor:
    """q: (tokens, heads, dim) -> (tokens, heads, dim). The reference: gather each sequence's
    blocks into contiguous keys and values, then SDPA with the causal offset of a cached prefix."""
    bs = k_cache.shape[1]
    out = torch.empty_like(q)
    start = 0
    for i, (ql, n) in enumerate(zip(batch.q_lens, batch.ctx_lens)):
        blocks = batch.block_tables[i, :(n + bs - 1) // bs].long()
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


class TorchBackend:
    name = "torch"

    def __init__(self, scale: float):
        self.scale = scale

    def __call__(self, k_cache, v_cache, q, k, v, batch: Batch) -> torch.Tensor:
        store_kv(k_cache, v_cache, k, v, batch.slots)
        return attend_torch(q, k_cache, v_cache, batch, self.scale)


def choose_backend(name: str, device: torch.device, scale: float):
    """`auto`: Triton on a CUDA device when it imports, else the torch reference."""
    if name == "torch" or (name == "auto" and device.type != "cuda"):
        return TorchBackend(scale)
    from kb.kernels.paged_attention import TritonBackend

    return TritonBackend(scale)
