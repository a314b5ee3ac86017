"""Attention over the paged KV cache for a step's `Batch`: one interface, two backends chosen once.

A backend is called per layer with that layer's cache (k_cache, v_cache: (blocks, block_size,
kv_heads, dim)), the fused qkv projection (tokens, (heads + 2 kv_heads) * dim) and the rotary
tables (tokens, dim): it rotates queries and keys, writes the new keys and values to their slots,
and returns the attention output (tokens, heads, dim), each query seeing its sequence's cache up to
its own position. `layer_kernels` names the module the decoder's norms and SwiGLU run through, so
that a model runs wholly on the reference or wholly on the kernels.

- `torch`: the plain-torch references (kb.kernels.*_ref): the CPU path and the oracle;
- `triton`: kb's kernels (kb.kernels.paged_attention, paged_decode, fused), on a CUDA device.

A decode step of up to `decode_layers.MAX_TOKENS` tokens can instead run each layer through
`decode_layers` (kb.kernels.decode_layer, or its reference): `qkv` then does the norm, projection,
rotation and store in one, and `rotated` attends with queries already rotated, where the backend's
`fuse_decode` says so (the Triton backend's; the torch one's only when a test asks).
"""

from __future__ import annotations

import torch

from kb.rag.batch import Batch


class TorchBackend:
    name = "torch"
    prefix_tile = 0  # the reference reads each sequence's cache whole: no shared-prefix plan
    fuse_decode = False

    def __init__(self, heads: int, kv_heads: int, scale: float):
        from kb.kernels import decode_layer_ref, fused_ref, paged_attention_ref

        self.heads, self.kv_heads, self.scale = heads, kv_heads, scale
        self.layer_kernels, self.decode_layers, self._attend = fused_ref, decode_layer_ref, paged_attention_ref.attend

    def __call__(self, k_cache, v_cache, qkv, cos, sin, batch: Batch) -> torch.Tensor:
        q = self.layer_kernels.rope_store(qkv, cos, sin, k_cache, v_cache, batch.slots, self.heads, self.kv_heads)
        return self.rotated(k_cache, v_cache, q, batch)

    def qkv(self, k_cache, v_cache, x, norm, proj, cos, sin, batch: Batch) -> torch.Tensor:
        """Rotated queries of the residual stream x through `norm` and `proj` (the decoder's
        modules); their keys and values stored."""
        return self.decode_layers.norm_qkv_rope_store(x, norm.weight, norm.eps, proj.weight, proj.bias, cos, sin,
                                                      k_cache, v_cache, batch.slots, self.heads, self.kv_heads)

    def rotated(self, k_cache, v_cache, q, batch: Batch) -> torch.Tensor:
        return self._attend(q, k_cache, v_cache, batch.block_tables, batch.q_lens, batch.ctx_lens, self.scale)


class TritonBackend(TorchBackend):
    name = "triton"
    # kb.kernels.decode_layer for decode steps of up to 16 tokens: with its swept launch settings
    # about 15 us a layer against 26 for cuBLAS's products and the small kernels (H200, 0.5B shape)
    fuse_decode = True

    def __init__(self, heads: int, kv_heads: int, scale: float):
        from kb.kernels import decode_layer, fused, paged_attention, paged_decode

        self.heads, self.kv_heads, self.scale = heads, kv_heads, scale
        self.layer_kernels, self.decode_layers = fused, decode_layer
        self._extend, self._decode = paged_attention.extend, paged_decode.decode
        self.prefix_tile = paged_decode.PREFIX_TILE  # sequences per tile of a decode's shared-prefix plan
        self.extend_tile = paged_attention.EXTEND_TILE  # queries per tile of `extend` (a prefill graph's)
        self._settings = paged_attention.settings

    def rotated(self, k_cache, v_cache, q, batch: Batch) -> torch.Tensor:
        if batch.decode:
            return self._decode(q, k_cache, v_cache, batch.block_tables, batch.ctx, self.scale,
                                batch.skip, batch.members, batch.prefix_tiles)
        # long prompts' chunks take bigger tiles, and read their blocks without a gather where
        # they are one run (the pool hands out its lowest free ids first)
        launch = self._settings(max(batch.q_lens), q.shape[-1], batch.contiguous, q.element_size())
        return self._extend(q, k_cache, v_cache, batch.block_tables, batch.cu_q, batch.ctx,
                            batch.tiles(launch["block_m"]), self.scale, **launch)


def choose_backend(name: str, device: torch.device, heads: int, kv_heads: int, scale: float):
    """`auto`: Triton on a CUDA device, else the torch reference."""
    if name == "torch" or (name == "auto" and device.type != "cuda"):
        return TorchBackend(heads, kv_heads, scale)
    return TritonBackend(heads, kv_heads, scale)
