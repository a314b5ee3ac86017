"""Plain-torch references of kb.kernels.decode_layer, one function per kernel with the same
arguments and results: the unfused layer pieces (kb.kernels.fused_ref) composed."""

from __future__ import annotations

import torch

from kb.kernels import fused_ref

MAX_TOKENS = 16  # as the kernels'


def norm_qkv_rope_store(x, norm_weight, eps: float, weight, bias, cos, sin, k_cache, v_cache, slots,
                        heads: int, kv_heads: int) -> torch.Tensor:
    qkv = torch.nn.functional.linear(fused_ref.rms_norm(x, norm_weight, eps)[0], weight, bias)
    return fused_ref.rope_store(qkv, cos, sin, k_cache, v_cache, slots, heads, kv_heads)


def linear_residual(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    return residual + x @ weight.T


def norm_gate_up(x: torch.Tensor, norm_weight: torch.Tensor, eps: float, weight: torch.Tensor) -> torch.Tensor:
    return fused_ref.silu_mul(torch.nn.functional.linear(fused_ref.rms_norm(x, norm_weight, eps)[0], weight))
