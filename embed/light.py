"""The query encoder without torch: a BERT-family model's forward pass in numpy, over its
safetensors weights memory-mapped. A cold `kb query` embeds one short text, and importing torch
and transformers for it took seconds (7.1 s of a 9.7 s hybrid query on a 2-core machine); numpy
runs MiniLM's 6 layers over a query's tokens in milliseconds. fp32 throughout, as the torch
encoder on the CPU; tests/test_light_encoder.py checks the two agree (cosine >= 0.9999).

Index-time embedding keeps the torch and GPU paths (kb.embed.encoder): numpy has no batching
worth the name, and this is for a handful of texts per process.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from kb.embed import modules
from kb.embed.framing import Framing

# What the numpy forward implements: BERT with absolute positions and erf GELU (MiniLM, BGE, E5,
# GTE, multilingual MiniLM). Anything else (RoBERTa's shifted positions, MPNet's relative bias,
# Gemma) goes to the torch encoder.
_FAMILIES = ("bert",)
_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "<u2"}


def supported(folder: Path) -> bool:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return (config.get("model_type") in _FAMILIES and config.get("hidden_act") == "gelu"
            and config.get("position_embedding_type", "absolute") == "absolute"
            and (folder / "model.safetensors").is_file())


def mapped_tensors(path: Path) -> dict[str, np.ndarray]:
    """A safetensors file's float tensors as float32 arrays over a read-only memory map (fp16 and
    bf16 are widened, copying). Format: u64 header length, JSON header, then the raw data."""
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    n = int(raw[:8].view("<u8")[0])
    header = json.loads(bytes(raw[8:8 + n]))
    out = {}
    for name, t in header.items():
        if name == "__metadata__" or t["dtype"] not in _DTYPES:
            continue  # integer buffers (BERT's position_ids) are not weights
        start, end = t["data_offsets"]
        a = raw[8 + n + start:8 + n + end].view(_DTYPES[t["dtype"]])
        if t["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = a.astype(np.float32, copy=False).reshape(t["shape"])
    return out


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = np.square(x - mu).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to 1.5e-7 (Abramowitz and Stegun 7.1.26); numpy has none and scipy is not a dependency."""
    t = 1.0 / (1.0 + 0.3275911 * np.abs(x))
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return np.sign(x) * (1.0 - poly * np.exp(-x * x))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


class LightEncoder(Framing):
    """The same vectors as kb.embed.encoder.Encoder on the CPU for a BERT-family folder
    (`supported`), without torch."""

    def __init__(self, cfg):
        from kb.embed.encoder import describe

        folder = cfg.folder()
        self._frame(cfg, describe(cfg))
        config = json.loads((folder / "config.json").read_text())
        self.heads, self.eps = config["num_attention_heads"], config["layer_norm_eps"]
        self.layers = config["num_hidden_layers"]
        w = mapped_tensors(folder / "model.safetensors")
        # BertForX checkpoints prefix their encoder's weights with "bert."
        self.w = {k.removeprefix("bert."): v for k, v in w.items()}
        self.dense = [(mapped_tensors(folder / path / "model.safetensors"), bias)
                      for path, _, _, bias in modules.dense(folder)] if "dense" in self.fingerprint else []

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def _attention(self, x: np.ndarray, p: str) -> np.ndarray:
        """Bidirectional self-attention of one unpadded sequence x (t, hidden) -> (t, hidden)."""
        t, hidden = x.shape
        split = lambda y: y.reshape(t, self.heads, -1).transpose(1, 0, 2)  # (heads, t, head_dim)
        q, k, v = (split(self._linear(x, p + "attention.self." + n)) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(hidden // self.heads)  # (heads, t, t)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        ctx = (scores / scores.sum(-1, keepdims=True)) @ v  # (heads, t, head_dim)
        return ctx.transpose(1, 0, 2).reshape(t, hidden)

    def forward(self, ids: np.ndarray) -> np.ndarray:
        """Last hidden states (t, hidden) of one model input (special tokens included)."""
        w, eps = self.w, self.eps
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:len(ids)]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            a = self._linear(self._attention(x, p), p + "attention.output.dense")
            x = _layer_norm(a + x, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
            h = self._linear(_gelu(self._linear(x, p + "intermediate.dense")), p + "output.dense")
            x = _layer_norm(h + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
        return x

    def embed_inputs(self, inputs: list[np.ndarray]) -> np.ndarray:
        """(n, dims) float32: each input on its own (no padding), pooled, the Dense layers, the
        Matryoshka cut and the norm, as the torch encoder does."""
        out = np.zeros((len(inputs), self.dims), dtype=np.float32)
        for i, ids in enumerate(inputs):
            hidden = self.forward(np.asarray(ids, dtype=np.int64))
            v = hidden[0] if self.pooling == "cls" else hidden.mean(0)
            for weights, bias in self.dense:
                v = v @ weights["linear.weight"].T + (weights["linear.bias"] if bias else 0.0)
            v = v[:self.dims]
            out[i] = v / max(float(np.linalg.norm(v)), 1e-12) if self.cfg.normalize else v
        return out
