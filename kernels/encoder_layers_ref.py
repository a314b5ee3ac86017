"""Plain-torch references of kb.kernels.encoder_layers, one function per kernel with the same
arguments: what the kernels must compute, written for clarity (a loop over sequences, fp32
throughout)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def relative_buckets(rel: torch.Tensor, num_buckets: int = 32, max_distance: int = 128) -> torch.Tensor:
    """MPNet's bidirectional bucket of key position - query position."""
    half = num_buckets // 2
    exact = half // 2
    n = -rel
    ret = (n < 0).long() * half
    n = n.abs()
    large = exact + (torch.log(n.float().clamp(min=1) / exact) / math.log(max_distance / exact)
                     * (half - exact)).long()
    return ret + torch.where(n < exact, n, large.clamp(max=half - 1))


def varlen_attention(qkv: torch.Tensor, cu: torch.Tensor, tiles=None, heads: int = 1,
                     rel_bias: torch.Tensor | None = None, num_buckets: int = 32, max_distance: int = 128,
                     **_) -> torch.Tensor:
    tokens, width = qkv.shape
    dim = width // (3 * heads)
    q, k, v = qkv.float().view(tokens, 3, heads, dim).unbind(1)
    out = torch.empty((tokens, heads, dim), dtype=torch.float32, device=qkv.device)
    bounds = cu.tolist()
    for a, b in zip(bounds, bounds[1:]):
        s = torch.einsum("qhd,khd->hqk", q[a:b], k[a:b]) / math.sqrt(dim)
        if rel_bias is not None:
            pos = torch.arange(b - a, device=qkv.device)
            bucket = relative_buckets(pos[None, :] - pos[:, None], num_buckets, max_distance)
            s = s + rel_bias.float()[bucket].permute(2, 0, 1)
        out[a:b] = torch.einsum("hqk,khd->qhd", s.softmax(-1), v[a:b])
    return out.reshape(tokens, heads * dim).to(qkv.dtype)


def add_layer_norm(x, residual, weight, bias, eps):
    return F.layer_norm(x.float() + residual.float(), x.shape[-1:], weight.float(), bias.float(), eps).to(x.dtype)


def embed_layer_norm(ids, positions, word, pos, token_type, weight, bias, eps):
    x = word.float()[ids.long()] + pos.float()[positions.long()] + token_type.float()
    return F.layer_norm(x, x.shape[-1:], weight.float(), bias.float(), eps).to(word.dtype)


def linear(x, weight, bias, gelu=False, **_):
    y = x.float() @ weight.float().T + bias.float()
    return (F.gelu(y) if gelu else y).to(x.dtype)


def mean_pool(x, cu, normalize=True):
    bounds = cu.tolist()
    out = torch.stack([x[a:b].float().mean(0) for a, b in zip(bounds, bounds[1:])])
    return F.normalize(out, dim=-1) if normalize else out
