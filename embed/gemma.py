"""Gemma 3 text encoders (EmbeddingGemma) over packed sequences: the texts of a batch back to back,
no padding, attention per text through varlen flash attention on a GPU. Hugging Face pads every
text of a batch to the longest and builds a dense mask for each layer type (sliding and full),
which keeps it off the flash kernels; here each token costs only its own work.

The layers are the loaded Hugging Face model's own modules (projections, MLP); the wiring between
them is kb's: positions restart at 0 for each text, rotary tables per layer type, bidirectional
attention. On a GPU the six RMSNorms of a layer (Gemma's fp32 `norm(x) * (1 + w)`, rounded once)
run as kb's fused Triton kernel, each residual addition fused into the norm that follows it:
unfused, their fp32 casts and element-wise passes took two thirds of the time (torch profiler,
H200). On the CPU the model's own norm modules run (the reference). Texts must fit the sliding window (for a bidirectional model transformers
halves it: 257 tokens for EmbeddingGemma; kb's chunks are at most 250 with the prompt), where a
sliding layer sees the whole text as a full one does; longer ones take the transformers path.
"""

from __future__ import annotations

import numpy as np
import torch


def supported(config) -> bool:
    """Whether `config` (a Hugging Face config) is a Gemma 3 text encoder this runs."""
    return (config.model_type == "gemma3_text" and getattr(config, "use_bidirectional_attention", False)
            and not getattr(config, "attn_logit_softcapping", None) and _bases(config) is not None)


def _bases(config) -> dict[str, float] | None:
    """Rotary base per layer type (transformers 5 `rope_parameters`, or 4's two fields); None for
    scaled or other rotary types."""
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and "full_attention" in params:
        if any(p.get("rope_type", "default") != "default" for p in params.values()):
            return None
        return {t: float(p["rope_theta"]) for t, p in params.items()}
    if getattr(config, "rope_scaling", None):
        return None
    return {"full_attention": float(config.rope_theta), "sliding_attention": float(config.rope_local_base_freq)}


class PackedGemma:
    def __init__(self, model):
        """model: a loaded Gemma3TextModel, in the dtype and on the device to run in."""
        self.model, cfg = model, model.config
        self.bases = _bases(cfg)
        self.heads, self.kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.scale = cfg.query_pre_attn_scalar ** -0.5
        self.types = cfg.layer_types
        self.window = cfg.sliding_window
        self._weights: dict = {}

    def fits(self, inputs: list[np.ndarray]) -> bool:
        """Whether every input fits the sliding window: a token sees those less than `window` away."""
        return max(map(len, inputs), default=0) <= self.window

    def pool(self, inputs: list[np.ndarray], batch_tokens: int) -> torch.Tensor:
        """(n, hidden) float32 mean of the last hidden states of each input (token ids, special tokens
        included), batches of at most `batch_tokens` tokens back to back."""
        out, start = [], 0
        while start < len(inputs):
            end, size = start, 0
            while end < len(inputs) and (end == start or size + len(inputs[end]) <= batch_tokens):
                size += len(inputs[end])
                end += 1
            out.append(self._batch(inputs[start:end]))
            start = end
        return torch.cat(out)

    @torch.inference_mode()
    def _batch(self, inputs: list[np.ndarray]) -> torch.Tensor:
        device = self.model.embed_tokens.weight.device
        lengths = torch.tensor([len(x) for x in inputs])
        ids = torch.from_numpy(np.concatenate(inputs).astype(np.int64)).to(device, non_blocking=True)
        cu = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(device, torch.int32)
        lengths = lengths.to(device)
        segment = torch.repeat_interleave(torch.arange(len(inputs), device=device), lengths)  # each token's text
        pos = torch.arange(len(ids), device=device) - cu[:-1].long()[segment]  # restarting at 0 per text
        rope = {t: _rotary(pos, self.head_dim, base, self.model.embed_tokens.weight.dtype)
                for t, base in self.bases.items()}
        h = self.model.embed_tokens(ids)
        layers, longest = self.model.layers, int(lengths.max())
        x = self._norm(layers[0].input_layernorm, h)
        for i, (layer, kind) in enumerate(zip(layers, self.types)):
            a = self._norm(layer.post_attention_layernorm, self._attention(layer.self_attn, x, rope[kind], cu, longest))
            x, h = self._add_norm(a, h, layer.pre_feedforward_layernorm)
            m = self._norm(layer.post_feedforward_layernorm, layer.mlp(x))
            x, h = self._add_norm(m, h, layers[i + 1].input_layernorm if i + 1 < len(layers) else self.model.norm)
        h = x.float()
        sums = torch.zeros((len(inputs), h.shape[1]), device=device).index_add_(0, segment, h)
        return sums / lengths.unsqueeze(1)

    def _norm(self, module, x: torch.Tensor) -> torch.Tensor:
        """`module` (a Gemma3RMSNorm) of x, over its last dimension."""
        if not x.is_cuda:
            return module(x)
        from kb.kernels.fused import rms_norm

        return rms_norm(x.reshape(-1, x.shape[-1]), *self._weight(module))[0].view(x.shape)

    def _add_norm(self, x: torch.Tensor, residual: torch.Tensor, module) -> tuple[torch.Tensor, torch.Tensor]:
        """(module(residual + x), residual + x); on a GPU the residual is updated in place."""
        if not x.is_cuda:
            residual = residual + x
            return module(residual), residual
        from kb.kernels.fused import rms_norm

        return rms_norm(x, *self._weight(module), residual=residual)

    def _weight(self, module) -> tuple[torch.Tensor, float]:
        """Gemma's (1 + w) in fp32, made once per module, and its epsilon."""
        if module not in self._weights:
            self._weights[module] = ((1.0 + module.weight.float()).contiguous(), module.eps)
        return self._weights[module]

    def _attention(self, attn, x: torch.Tensor, rope, cu: torch.Tensor, longest: int) -> torch.Tensor:
        cos, sin = rope
        q = _rotate(self._norm(attn.q_norm, attn.q_proj(x).view(-1, self.heads, self.head_dim)), cos, sin)
        k = _rotate(self._norm(attn.k_norm, attn.k_proj(x).view(-1, self.kv_heads, self.head_dim)), cos, sin)
        v = attn.v_proj(x).view(-1, self.kv_heads, self.head_dim)
        if self.kv_heads != self.heads:
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        return attn.o_proj(_attend(q, k, v, cu, longest, self.scale).reshape(x.shape[0], -1))


def _attend(q, k, v, cu: torch.Tensor, longest: int, scale: float) -> torch.Tensor:
    """Bidirectional attention within each text: (tokens, heads, dim) in and out."""
    if q.is_cuda:
        try:
            from torch.nn.attention.varlen import varlen_attn
        except ImportError:  # torch before 2.10: the flash kernel itself
            return torch.ops.aten._flash_attention_forward(q, k, v, cu, cu, longest, longest, 0.0, False, False,
                                                           scale=scale)[0]
        return varlen_attn(q, k, v, cu, cu, longest, longest, scale=scale)
    out = torch.empty_like(q)  # the CPU (tests): one text at a time
    bounds = cu.tolist()
    for a, b in zip(bounds, bounds[1:]):
        out[a:b] = torch.nn.functional.scaled_dot_product_attention(
            q[a:b].transpose(0, 1), k[a:b].transpose(0, 1), v[a:b].transpose(0, 1), scale=scale).transpose(0, 1)
    return out


def _rotary(pos: torch.Tensor, dim: int, base: float, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, device=pos.device, dtype=torch.float32) / dim))
    angles = pos.float()[:, None] * inv[None, :]
    emb = torch.cat((angles, angles), dim=-1)[:, None, :]  # (tokens, 1, dim)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin
