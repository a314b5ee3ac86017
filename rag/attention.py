"""Attention over the paged KV cache for a step's `Batch`: one interface, two backends chosen once.

A backend is called per layer with that layer's cache (k_cache, v_cache: (blocks, block_size,
kv_heads, dim)), the fused qkv projection (tokens, (heads + 2 kv_heads) * dim) and the rotary
tables (tokens, dim): it rotates queries and keys, writes the new keys and values to their slots,
and returns the attention output (tokens, heads, dim), each query seeing its sequence's cache up to
its own position. `layer_kernels` names the module the decoder's norms and SwiGLU run through, so
that a model runs wholly on the reference or wholly on the kernels.

- `torch`: the plain-torch references (kb.kernels.*_ref): the CPU path and the oracle;
- `triton`: kb's kernels (kb.kernels.paged_attention, paged_decode, fused), on a CUDA device.
"""

from __future__ import annotations

import torch

from kb.rag.batch import Batch


class TorchBackend:
    name = "torch"
    prefix_tile = 0  # the reference reads each sequence's cache whole: no shared-prefix plan

    def __init__(self, heads: int, kv_heads: int, scale: float):
        from kb.kernels import fused_ref, paged_attention_ref

        self.heads, self.kv_heads, self.scale = heads, kv_heads, scale
        self.layer_kernels, self._attend = fused_ref, paged_attention_ref.attend

    def __call__(self, k_cache, v_cache, qkv, cos, sin, batch: Batch) -> torch.Tensor:
        q = self.layer_kernels.rope_store(qkv, cos, sin, k_cache, v_cache, batch.slots, self.heads, self.kv_heads)
        return self._attend(q, k_cache, v_cache, batch.block_tables, batch.q_lens, batch.ctx_lens, self.scale)


class TritonBackend:
    name = "triton"

    def __init__(self, heads: int, kv_heads: int, scale: float):
        from kb.kernels import fused, paged_attention, paged_decode

        self.heads, self.kv_heads, self.scale = heads, kv_heads, scale
        self.layer_kernels, self._extend, self._decode = fused, paged_attention.extend, paged_decode.decode
        self.prefix_tile = paged_decode.PREFIX_TILE  # sequences per tile of a decode's shared-prefix plan
        self.extend_tile = paged_attention.EXTEND_TILE  # queries per tile of `extend` (a prefill graph's)
        self._settings = paged_attention.settings

    def __call__(self, k_cache, v_cache, qkv, cos, sin, batch: Batch) -> torch.Tensor:
        q = self.layer_kernels.rope_store(qkv, cos, sin, k_cache, v_cache, batch.slots, self.heads, self.kv_heads)
        if batch.decode:
            return self._decode(q, k_cache, v_cache, batch.block_tables, batch.ctx, self.scale,
                                batch.max_ctx or max(batch.ctx_lens), batch.skip, batch.members, batch.prefix_tiles)
        launch = self._settings(q.shape[0], q.shape[-1])  # long prompts' chunks take bigger tiles
        return self._extend(q, k_cache, v_cache, batch.block_tables, batch.cu_q, batch.ctx,
                            batch.tiles(launch["block_m"]), self.scale, **launch)


def choose_backend(name: str, device: torch.device, heads: int, kv_heads: int, scale: float):
    """`auto`: Triton on a CUDA device, else the torch reference."""
    if name == "torch" or (name == "auto" and device.type != "cuda"):
        return TorchBackend(heads, kv_heads, scale)
    return TritonBackend(heads, kv_heads, scale)
