"""kb's own decoder for the Llama and Qwen2 families (SmolLM2, Llama 2/3, Qwen2.5): grouped-query
attention, rotary positions, RMSNorm, SwiGLU, tied or separate output embeddings. It runs a flat
batch of tokens from many sequences at once (no padding): attention reads and writes the paged KV
cache through an attention backend (kb.rag.attention: torch reference or Triton), so prefill,
cached-prefix prefill and decode are one forward; norms and SwiGLU run through the backend's
`layer_kernels` (kb.kernels.fused_ref, or the fused Triton kernels).

Weights load from a local Hugging Face folder (safetensors); q/k/v and gate/up projections are
concatenated at load so that each is one matrix product.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kb.errors import NotFound, UsageError
from kb.kernels import fused_ref
from kb.rag.rope import ROPE_KINDS, dynamic_frequencies, dynamic_limit, rotary

ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_eps: float
    rope_theta: float
    rope_scaling: tuple  # (("rope_type", kind), (key, value), ...) of a linear, llama3 or yarn scaling, or ()
    max_positions: int
    tie_embeddings: bool
    attention_bias: bool

    @classmethod
    def from_folder(cls, folder: Path) -> "ModelConfig":
        path = Path(folder) / "config.json"
        if not path.is_file():
            raise NotFound(f"not a Hugging Face model folder (no config.json): {folder}")
        return cls.from_dict(json.loads(path.read_text()))

    @classmethod
    def from_dict(cls, c: dict) -> "ModelConfig":
        archs = c.get("architectures") or []
        arch = next((ARCHITECTURES[a] for a in archs if a in ARCHITECTURES), None)
        if arch is None:
            raise UsageError(f"unsupported model architecture {', '.join(archs) or c.get('model_type')!r}: "
                             f"kb's generator runs {', '.join(ARCHITECTURES)}")
        rope = dict(c.get("rope_parameters") or c.get("rope_scaling") or {})
        theta = rope.pop("rope_theta", c.get("rope_theta", 10000.0))
        kind = rope.pop("rope_type", rope.pop("type", "default"))
        if kind not in ROPE_KINDS:
            raise UsageError(f"unsupported rope scaling {kind!r} (kb supports {', '.join(ROPE_KINDS)})")
        positions = c.get("max_position_embeddings", 4096)
        if kind == "dynamic":  # its base grows past the trained context, up to `factor` times it
            rope["max_position_embeddings"] = positions
            positions = int(rope["factor"] * positions)
        if kind in ("linear", "yarn") and rope.get("factor"):  # the context these scalings extend to
            positions = max(positions, int(rope["factor"] * rope.get("original_max_position_embeddings", positions)))
        heads = c["num_attention_heads"]
        return cls(arch=arch, vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
                   intermediate_size=c["intermediate_size"], num_layers=c["num_hidden_layers"],
                   num_heads=heads, num_kv_heads=c.get("num_key_value_heads", heads),
                   head_dim=c.get("head_dim") or c["hidden_size"] // heads, rms_eps=c.get("rms_norm_eps", 1e-6),
                   rope_theta=float(theta),
                   rope_scaling=(("rope_type", kind), *sorted(rope.items())) if kind != "default" else (),
                   max_positions=positions,
                   tie_embeddings=bool(c.get("tie_word_embeddings", False)),
                   attention_bias=arch == "qwen2" or bool(c.get("attention_bias", False)))


class Linear(nn.Linear):
    """nn.Linear whose weights come only from a checkpoint: made on the meta device and never
    initialised (nn.Linear's random init there runs through torch's reference ops, whose first use
    imports torch._dynamo: a second of every `kb ask`)."""

    def reset_parameters(self) -> None:
        pass


class Embedding(nn.Embedding):
    """nn.Embedding, likewise never initialised."""

    def reset_parameters(self) -> None:
        pass


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps
        self.kernels = fused_ref  # or kb.kernels.fused (CausalLM.use_kernels)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        """norm(x), or with `residual`: (norm(x + residual), x + residual), the residual stream."""
        out, residual = self.kernels.rms_norm(x, self.weight, self.eps, residual)
        return out if residual is None else (out, residual)


class Layer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_eps)
        self.qkv = Linear(cfg.hidden_size, q + 2 * kv, bias=cfg.attention_bias)
        self.o_proj = Linear(q, cfg.hidden_size, bias=False)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_eps)
        self.gate_up = Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.kernels = fused_ref

    def forward(self, x, residual, cos, sin, attend) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (tokens, hidden), the last layer's output, and the residual stream before it (None
        at the first layer). `attend(qkv, cos, sin)` rotates, stores k and v in the cache and
        returns the attention output (tokens, heads, dim). Returns (output, residual stream)."""
        if residual is None:
            h, residual = self.input_layernorm(x), x
        else:
            h, residual = self.input_layernorm(x, residual)
        out = attend(self.qkv(h), cos, sin)
        h, residual = self.post_attention_layernorm(self.o_proj(out.reshape(len(x), -1)), residual)
        return self.down_proj(self.kernels.silu_mul(self.gate_up(h))), residual

    def decode(self, x, cos, sin, attend, layer: int, k) -> torch.Tensor:
        """The same layer through a decode step's fused kernels `k` (kb.kernels.decode_layer or its
        reference): x is the residual stream, and so is the result."""
        q = attend.qkv(layer, x, self.input_layernorm, self.qkv, cos, sin)
        x = k.linear_residual(attend.rotated(layer, q).reshape(len(x), -1), self.o_proj.weight, x)
        n = self.post_attention_layernorm
        return k.linear_residual(k.norm_gate_up(x, n.weight, n.eps, self.gate_up.weight), self.down_proj.weight, x)


class CausalLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_eps)
        self.lm_head = None if cfg.tie_embeddings else Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.packed_head = None  # the output embedding in oneDNN's layout, on the CPU (kb.rag.packed)
        self.inv_freq, self.rope_scale = rotary(cfg)  # not a buffer: `to(dtype)` must not round it
        self.dynamic_rope = dynamic_limit(cfg)  # dynamic NTK's trained context, or None

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, attend, rope_lens: list[int] | None = None):
        """ids, positions: (tokens,) of many sequences back to back; `attend(layer, qkv, cos, sin)`
        (kb.rag.runner.Attend; with `attend.fused`, each layer's `decode`); `rope_lens`: each
        token's sequence length as dynamic NTK scaling counts it (`dynamic_rope`'s models only).
        Returns the final hidden states (tokens, hidden)."""
        inv = self.inv_freq[None]
        if rope_lens is not None and (grown := dynamic_frequencies(self.cfg, self.inv_freq, rope_lens)) is not None:
            inv = grown
        freqs = positions[:, None].float() * inv
        angles = torch.cat((freqs, freqs), dim=-1)
        x = self.embed_tokens(ids)
        cos, sin = angles.cos(), angles.sin()
        if self.rope_scale != 1.0:  # YaRN's attention sharpening, as Hugging Face applies it
            cos, sin = cos * self.rope_scale, sin * self.rope_scale
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        fused = getattr(attend, "fused", None)
        if fused is not None:  # a small decode step: six launches a layer
            for i, layer in enumerate(self.layers):
                x = layer.decode(x, cos, sin, attend, i, fused)
            return self.norm(x)
        residual = None
        for i, layer in enumerate(self.layers):
            x, residual = layer(x, residual, cos, sin, lambda qkv, c, s, i=i: attend(i, qkv, c, s))
        return self.norm(x, residual)[0]

    def _apply(self, fn, recurse=True):
        """Moving or casting the model keeps the rotary frequencies float32 (as Hugging Face
        does): rounded to bf16 they would shift the angles of far positions."""
        super()._apply(fn, recurse)
        self.inv_freq = self.inv_freq.to(self.embed_tokens.weight.device)
        return self

    def use_kernels(self, kernels) -> None:
        """Run norms and the SwiGLU product through `kernels`: kb.kernels.fused or its reference
        kb.kernels.fused_ref (the default), as the attention backend names (`layer_kernels`)."""
        for m in self.modules():
            if isinstance(m, (RMSNorm, Layer)):
                m.kernels = kernels

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.packed_head is not None:  # kb.rag.packed
            return self.packed_head(hidden).float()
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return (hidden @ weight.T).float()


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise NotFound(f"no .safetensors weights in {folder}")
    out: dict[str, torch.Tensor] = {}
    for f in files:
        out.update(load_file(f))
    return out


def load_model(folder: Path, device: torch.device, dtype: torch.dtype) -> CausalLM:
    """The model in `folder` with its weights."""
    return build_model(ModelConfig.from_folder(folder), _tensors(Path(folder)), device, dtype, str(folder))


def build_model(cfg: ModelConfig, tensors: dict[str, torch.Tensor], device: torch.device,
                dtype: torch.dtype, where: str = "the weights") -> CausalLM:
    """kb's model from a Hugging Face state dict (names as in the safetensors files); projections
    are fused as the layers expect them."""
    raw = {k.removeprefix("model."): v for k, v in tensors.items()}
    state = {}
    for name, tensor in raw.items():
        if ".self_attn.k_proj." in name or ".self_attn.v_proj." in name or ".mlp.up_proj." in name:
            continue  # concatenated with their q_proj / gate_proj below
        if ".self_attn.q_proj." in name:
            parts = [raw[name.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")]
            state[name.replace("self_attn.q_proj", "qkv")] = torch.cat(parts)
        elif ".mlp.gate_proj." in name:
            state[name.replace("mlp.gate_proj", "gate_up")] = torch.cat([tensor, raw[name.replace("gate", "up")]])
        else:
            state[name.replace("self_attn.", "").replace("mlp.", "")] = tensor
    if cfg.tie_embeddings:
        state.pop("lm_head.weight", None)
    with torch.device("meta"):
        model = CausalLM(cfg)
    model.load_state_dict(state, strict=False, assign=True)
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise NotFound(f"{where}: weights missing for {', '.join(missing[:3])}")
    return model.to(device=device, dtype=dtype).eval()
