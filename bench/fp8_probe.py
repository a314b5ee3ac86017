"""Would FP8 matrix products keep all-MiniLM-L6-v2's vectors within the 0.999 cosine bar? (They
are the only way left past 2x Hugging Face for a bge-base shape, whose fp16 GEMMs alone take more
than half of HF's time; README, GPU embedding.) A probe, not a kb code path, and it runs on the
CPU: kb's packed forward with its torch reference kernels (kb.kernels.encoder_ref), in bf16, with
some of each layer's four GEMMs done by torch._scaled_mm on float8_e4m3fn operands (weights
scaled per output channel, activations per row, as Hopper's rowwise FP8 GEMM takes them), against
the same forward in fp32: every chunk's cosine.

    python bench/fp8_probe.py [--chunks 400]

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sysconfig
import time
from pathlib import Path

import numpy as np

E4M3_MAX = 448.0
VARIANTS = [(), ("o",), ("down",), ("qkv",), ("up",), ("up", "down"), ("qkv", "o", "up", "down")]


def quantize_weight(w):
    """(N, K) weight -> float8 (N, K) and its (1, N) float32 scale, per output channel."""
    import torch

    scale = (w.float().abs().amax(1) / E4M3_MAX).clamp(min=1e-12)
    return (w.float() / scale[:, None]).to(torch.float8_e4m3fn), scale[None, :].contiguous()


def fp8_linear(x, w8, w_scale, bias):
    """x @ w.T + bias with both operands in float8, x scaled per row (in its own dtype, so the
    division is exact to it)."""
    import torch

    scale = (x.abs().amax(1, keepdim=True) / E4M3_MAX).clamp(min=1e-12)
    x8 = (x / scale).to(torch.float8_e4m3fn)
    return torch._scaled_mm(x8, w8.t(), scale_a=scale.float(), scale_b=w_scale, out_dtype=x.dtype) + bias


class Fp8Forward:
    """kb.embed.packed.PackedEncoder.hidden (BERT family) with the GEMMs named in `gemms` (of qkv,
    o, up, down) in FP8, the others in the model's dtype."""

    def __init__(self, enc, gemms):
        self.enc = enc
        self.q = [{name: quantize_weight(getattr(L, f"{name}_w")) for name in gemms} for L in enc.layers]

    def _linear(self, name, x, L, q):
        import torch.nn.functional as F

        if name in q:
            return fp8_linear(x, *q[name], getattr(L, f"{name}_b"))
        return F.linear(x, getattr(L, f"{name}_w"), getattr(L, f"{name}_b"))

    def __call__(self, ids, positions, cu, tiles):
        import torch.nn.functional as F

        enc, k = self.enc, self.enc.k
        x = k.embed_layer_norm(ids, positions, enc.word, enc.pos, enc.token_type, *enc.emb_ln, enc.eps)
        for L, q in zip(enc.layers, self.q):
            a = k.varlen_attention(self._linear("qkv", x, L, q), cu, tiles, enc.heads, **enc.attention)
            x = k.add_layer_norm(self._linear("o", a, L, q), x, L.ln1_w, L.ln1_b, enc.eps)
            h = F.gelu(self._linear("up", x, L, q))
            x = k.add_layer_norm(self._linear("down", h, L, q), x, L.ln2_w, L.ln2_b, enc.eps)
        return x


def chunks(n: int, tokenizer) -> list[list[int]]:
    """Token ids of the first `n` kb chunks of the standard library's sources."""
    from kb.index.chunker import ChunkConfig, chunk_text

    out: list = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        out += [list(c.token_ids) for c in chunk_text(path.read_text(errors="ignore"), "code", tokenizer, ChunkConfig())]
        if len(out) >= n:
            break
    return out[:n]


def embed(enc, forward, seqs, head, tail, room) -> np.ndarray:
    import torch

    from kb.embed.pipeline import batches, pack
    from kb.kernels import encoder_ref as R

    lengths = np.array([min(len(s), room) + len(head) + len(tail) for s in seqs])
    out = np.zeros((len(seqs), enc.word.shape[1]), np.float32)
    with torch.inference_mode():
        for idx in batches(lengths, 8192):
            buf, sizes = pack([seqs[i] for i in idx], np.asarray(head, np.int32), np.asarray(tail, np.int32), room,
                              enc.pos_offset, enc.attention["block_m"])
            ids, pos, cu, tiles_seq, tiles_m = torch.from_numpy(buf).split(sizes)
            out[idx] = R.mean_pool(forward(ids, pos, cu, (tiles_seq, tiles_m)), cu, True).float().numpy()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=400)
    args = ap.parse_args()
    import os

    import torch
    from transformers import AutoModel

    from kb.embed.encoder import EmbedConfig, Encoder, quiet_transformers
    from kb.embed.packed import PackedEncoder
    from kb.embed.tokenizer import default_model_dir

    quiet_transformers()
    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    folder = default_model_dir()
    frame = Encoder(EmbedConfig(device="cpu"))
    head, room = frame._framing(frame._passage)
    seqs = chunks(args.chunks, frame.tokenizer)
    ref_enc = PackedEncoder(AutoModel.from_pretrained(folder, dtype=torch.float32).eval(), ops="torch")
    ref = embed(ref_enc, ref_enc.hidden, seqs, head, frame.tail, room)
    enc = PackedEncoder(AutoModel.from_pretrained(folder, dtype=torch.bfloat16).eval(), ops="torch")
    rows = []
    for gemms in VARIANTS:
        got = embed(enc, Fp8Forward(enc, gemms) if gemms else enc.hidden, seqs, head, frame.tail, room)
        cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
        rows.append({"fp8_gemms": list(gemms), "min_cosine": round(float(cos.min()), 6),
                     "mean_cosine": round(float(cos.mean()), 6), "below_0.999": int((~(cos >= 0.999)).sum())})
    print(f"all-MiniLM-L6-v2, {len(seqs)} chunks, bf16 forward with these GEMMs in FP8 (rowwise), against fp32")
    for r in rows:
        print(f"  {'+'.join(r['fp8_gemms']) or 'none (bf16)':22} min {r['min_cosine']:.6f}  mean {r['mean_cosine']:.6f}"
              f"  below 0.999: {r['below_0.999']}/{len(seqs)}")
    print(json.dumps({"bench": "fp8_probe", "chunks": len(seqs), "seconds": round(time.perf_counter() - t0, 1),
                      "results": rows}))


if __name__ == "__main__":
    main()
