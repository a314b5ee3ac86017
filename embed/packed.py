"""kb's packed encoder for the GPU: a BERT, XLM-R/RoBERTa or MPNet encoder run over sequences laid
back to back (no padding anywhere), with kb's Triton kernels (kb.kernels.encoder_layers) for attention,
the embedding and residual LayerNorms, the FFN's bias + GELU and the pooling.

The weights are the Hugging Face model's own, read out of its loaded modules; the q, k and v
projections are concatenated into one matrix so that a layer is five kernels:
qkv GEMM, attention, output GEMM + add & norm, FFN up (+GELU), FFN down + add & norm.
`ops` picks the implementation: the Triton kernels, or their torch references (kb.kernels.encoder_layers_ref)
which the tests compare against Hugging Face on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

FAMILIES = ("bert", "roberta", "xlm-roberta", "camembert", "mpnet")

# kb.kernels.encoder_layers.varlen_attention's tiles by head width (bench/embed_gpu.py --tune-attention)
ATTENTION = {64: {"block_m": 128, "block_n": 64, "warps": 8, "stages": 3}}  # H200: 237 TFLOP/s, 64x64: 214
DEFAULT_ATTENTION = {"block_m": 64, "block_n": 64, "warps": 4, "stages": 3}  # and for width 32: best


@dataclass
class Layer:
    qkv_w: torch.Tensor
    qkv_b: torch.Tensor
    o_w: torch.Tensor
    o_b: torch.Tensor
    ln1_w: torch.Tensor
    ln1_b: torch.Tensor
    up_w: torch.Tensor
    up_b: torch.Tensor
    down_w: torch.Tensor
    down_b: torch.Tensor
    ln2_w: torch.Tensor
    ln2_b: torch.Tensor


def supported(config) -> bool:
    """Whether the packed runner computes what this Hugging Face config describes."""
    return (config.model_type in FAMILIES and getattr(config, "hidden_act", "") == "gelu"
            and getattr(config, "position_embedding_type", "absolute") == "absolute")


class PackedEncoder:
    def __init__(self, model, ops: str = "triton", gemm: str = "torch"):
        """model: a loaded Hugging Face encoder (AutoModel) in the dtype and on the device to run in;
        ops: "triton" or "torch" (the references); gemm: "torch" (cuBLAS, GELU apart), "triton"
        (kb's GEMM with bias + GELU fused) or "lt" (cuBLASLt's GELU epilogue, tanh-approximated)."""
        cfg = model.config
        if not supported(cfg):
            raise ValueError(f"the packed encoder does not run {cfg.model_type} with {cfg.hidden_act}")
        if ops == "triton":
            from kb.kernels import encoder_layers as k
        else:
            from kb.kernels import encoder_layers_ref as k
        self.k, self.gemm = k, gemm
        self.heads, self.eps = cfg.num_attention_heads, cfg.layer_norm_eps
        self.mpnet = cfg.model_type == "mpnet"
        # RoBERTa-style models count positions from padding_idx + 1
        self.pos_offset = 0 if cfg.model_type == "bert" else cfg.pad_token_id + 1
        emb = model.embeddings
        self.word, self.pos = emb.word_embeddings.weight, emb.position_embeddings.weight
        tt = getattr(emb, "token_type_embeddings", None)
        self.token_type = tt.weight[0] if tt is not None else torch.zeros_like(self.word[0])
        self.emb_ln = (emb.LayerNorm.weight, emb.LayerNorm.bias)
        self.rel_bias = model.encoder.relative_attention_bias.weight if self.mpnet else None
        self.num_buckets = getattr(model.encoder, "num_buckets", 32) if self.mpnet else 32
        self.layers = [self._layer(layer) for layer in model.encoder.layer]
        self.attention = dict(ATTENTION.get(cfg.hidden_size // self.heads, DEFAULT_ATTENTION))

    def _layer(self, layer) -> Layer:
        if self.mpnet:
            a = layer.attention.attn
            q, k, v, o, ln1 = a.q, a.k, a.v, a.o, layer.attention.LayerNorm
        else:
            s = layer.attention.self
            q, k, v, o, ln1 = s.query, s.key, s.value, layer.attention.output.dense, layer.attention.output.LayerNorm
        return Layer(torch.cat([q.weight, k.weight, v.weight]).contiguous(), torch.cat([q.bias, k.bias, v.bias]),
                     o.weight, o.bias, ln1.weight, ln1.bias, layer.intermediate.dense.weight,
                     layer.intermediate.dense.bias, layer.output.dense.weight, layer.output.dense.bias,
                     layer.output.LayerNorm.weight, layer.output.LayerNorm.bias)

    def positions(self, lengths: list[int]) -> list[int]:
        """Each token's position id, for sequences of these lengths back to back."""
        return [p + self.pos_offset for n in lengths for p in range(n)]

    def hidden(self, ids: torch.Tensor, positions: torch.Tensor, cu: torch.Tensor, tiles) -> torch.Tensor:
        """ids, positions: (tokens,) int32; cu: (n + 1,) int32 -> the last layer's (tokens, hidden)."""
        k = self.k
        x = k.embed_layer_norm(ids, positions, self.word, self.pos, self.token_type, *self.emb_ln, self.eps)
        for L in self.layers:
            qkv = F.linear(x, L.qkv_w, L.qkv_b)
            a = k.varlen_attention(qkv, cu, tiles, self.heads, rel_bias=self.rel_bias, num_buckets=self.num_buckets,
                                   **self.attention)
            x = k.add_layer_norm(F.linear(a, L.o_w, L.o_b), x, L.ln1_w, L.ln1_b, self.eps)
            if self.gemm == "triton":
                h = k.linear(x, L.up_w, L.up_b, gelu=True)
            elif self.gemm == "lt":  # cuBLASLt's GELU epilogue (its tanh approximation)
                h = torch._addmm_activation(L.up_b, x, L.up_w.t(), use_gelu=True)
            else:
                h = F.gelu(F.linear(x, L.up_w, L.up_b))
            x = k.add_layer_norm(F.linear(h, L.down_w, L.down_b), x, L.ln2_w, L.ln2_b, self.eps)
        return x

    def pool(self, x: torch.Tensor, cu: torch.Tensor, pooling: str, normalize: bool) -> torch.Tensor:
        if pooling == "cls":
            out = x[cu[:-1].long()].float()
            return F.normalize(out, dim=-1) if normalize else out
        return self.k.mean_pool(x, cu, normalize)
