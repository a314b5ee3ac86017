"""Rotary position frequencies with the long-context scalings of Hugging Face configs, computed as
Hugging Face computes them (kb's logits match its to 1e-5): linear, Llama 3's, YaRN (Qwen2.5's
128K configurations) and dynamic NTK (Llama's "dynamic": the base grows with the sequence's
length past the trained context). `cfg` is a kb.rag.decoder.ModelConfig."""

from __future__ import annotations

import math

import torch

ROPE_KINDS = ("default", "linear", "llama3", "yarn", "dynamic")


def rotary(cfg) -> tuple[torch.Tensor, float]:
    """((head_dim/2,) float32 rotary frequencies, the factor cos and sin are scaled by), with the
    configuration's long-context scaling: linear (positions slowed by `factor`), Llama 3's (long
    wavelengths slowed, short ones kept, the band between blended) or YaRN (Qwen2.5's 128K
    configurations: the same idea with the band set by how often each frequency turns within the
    original context, and attention sharpened by 0.1 ln(factor) + 1). Dynamic NTK's frequencies
    are these plain ones up to the trained context, then `dynamic_frequencies`. Made on the CPU
    whatever the default device (a model is built on the meta device)."""
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float, device="cpu") / cfg.head_dim))
    s = dict(cfg.rope_scaling)
    kind = s.pop("rope_type", "default")
    if kind == "linear":
        return inv / s["factor"], 1.0
    if kind == "llama3":
        return _llama3(inv, s), 1.0
    if kind == "yarn":
        return _yarn(inv, s, cfg)
    return inv, 1.0


def _llama3(inv: torch.Tensor, s: dict) -> torch.Tensor:
    factor, low, high = s["factor"], s.get("low_freq_factor", 1.0), s.get("high_freq_factor", 4.0)
    old = s.get("original_max_position_embeddings", 8192)
    wavelen = 2 * math.pi / inv
    # Long wavelengths are slowed by `factor`, short ones kept, the band between blended.
    scaled = torch.where(wavelen > old / low, inv / factor, inv)
    blend = (old / wavelen - low) / (high - low)
    mid = (wavelen >= old / high) & (wavelen <= old / low)
    return torch.where(mid, (1 - blend) * inv / factor + blend * inv, scaled)


def _yarn(inv: torch.Tensor, s: dict, cfg) -> tuple[torch.Tensor, float]:
    original = s.get("original_max_position_embeddings") or cfg.max_positions
    factor = s.get("factor") or cfg.max_positions / original
    d, theta = cfg.head_dim, cfg.rope_theta

    def index_turning(turns: float) -> float:
        """The frequency index (continuous) that turns `turns` times within the original context."""
        return d * math.log(original / (turns * 2 * math.pi)) / (2 * math.log(theta))
    lo, hi = index_turning(s.get("beta_fast") or 32), index_turning(s.get("beta_slow") or 1)
    if s.get("truncate", True):
        lo, hi = math.floor(lo), math.ceil(hi)
    lo, hi = max(lo, 0), min(hi, d - 1)
    # 0 below `lo` (fast frequencies, kept), 1 above `hi` (slow ones, slowed by `factor`), a ramp between
    ramp = ((torch.arange(d // 2, dtype=torch.float, device="cpu") - lo) / (hi - lo if hi != lo else 1e-3)).clamp(0, 1)
    inv = inv / factor * ramp + inv * (1 - ramp)

    def sharpen(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0
    attention = s.get("attention_factor")
    if attention is None:
        m, m_all = s.get("mscale"), s.get("mscale_all_dim")
        attention = sharpen(factor, m) / sharpen(factor, m_all) if m and m_all else sharpen(factor)
    return inv, float(attention)


def dynamic_limit(cfg) -> int | None:
    """With dynamic NTK scaling, the sequence length past which its base grows (the trained
    context, Hugging Face's max_position_embeddings); else None."""
    s = dict(cfg.rope_scaling)
    return s["max_position_embeddings"] if s.get("rope_type") == "dynamic" else None


def dynamic_frequencies(cfg, plain: torch.Tensor, lengths: list[int]) -> torch.Tensor | None:
    """(tokens, head_dim/2) float32 frequencies of dynamic NTK scaling for tokens of sequences of
    `lengths`, as Hugging Face counts a token's length (its forward's last position + 1): the
    `plain` ones up to the trained context, past it a base of theta * (factor * length / trained -
    (factor - 1)) ** (d / (d - 2)), in Hugging Face's float32 operations. None if no length passes
    the trained context."""
    s = dict(cfg.rope_scaling)
    limit, factor, d = s["max_position_embeddings"], s["factor"], cfg.head_dim
    longer = sorted({n for n in lengths if n > limit})
    if not longer:
        return None
    n = torch.tensor(longer, dtype=torch.int64, device=plain.device)
    base = cfg.rope_theta * ((factor * n / limit) - (factor - 1)) ** (d / (d - 2))
    exps = torch.arange(0, d, 2, dtype=torch.int64, device=plain.device).float() / d
    table = torch.cat((plain[None], 1.0 / (base[:, None] ** exps[None])))
    row = {n: i + 1 for i, n in enumerate(longer)}
    return table[torch.tensor([row.get(n, 0) for n in lengths], device=plain.device)]
