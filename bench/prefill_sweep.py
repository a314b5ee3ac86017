"""The extend (prefill) kernel's tile sizes and launch settings on long prompts, on a GPU: one
chunk of 8,192 new queries at the end of a 32K context (what chunked prefill runs last), for the
head shapes of Qwen2.5-0.5B (14 heads, 2 KV heads, dim 64) and Qwen2.5-7B (28, 4, 128). Each
setting's output is compared with the current default's; TFLOP/s counts the causal attention's
two matrix products. Prints a table per shape, then one JSON line.

    python3 bench/prefill_sweep.py
"""

from __future__ import annotations

import itertools

import torch
import triton
from common import emit

from kb.kernels import paged_attention as pa

SHAPES = {"qwen2.5-0.5b": (14, 2, 64), "qwen2.5-7b": (28, 4, 128)}
CTX, NEW, BS = 32768, 8192, 16


def case(heads: int, kv_heads: int, dim: int):
    g = torch.Generator(device="cuda").manual_seed(0)
    blocks = CTX // BS
    kc = torch.randn(blocks, BS, kv_heads, dim, device="cuda", dtype=torch.bfloat16, generator=g)
    vc = torch.randn(blocks, BS, kv_heads, dim, device="cuda", dtype=torch.bfloat16, generator=g)
    q = torch.randn(NEW, heads, dim, device="cuda", dtype=torch.bfloat16, generator=g)
    table = torch.arange(blocks, device="cuda", dtype=torch.int32)[None]
    cu = torch.tensor([0, NEW], device="cuda", dtype=torch.int32)
    ctx = torch.tensor([CTX], device="cuda", dtype=torch.int32)
    return q, kc, vc, table, cu, ctx


def tiles(block_m: int) -> torch.Tensor:
    starts = torch.arange(0, NEW, block_m, device="cuda", dtype=torch.int32)
    return torch.stack([torch.zeros_like(starts), starts])


def main() -> None:
    out = {}
    for name, (heads, kv_heads, dim) in SHAPES.items():
        q, kc, vc, table, cu, ctx = case(heads, kv_heads, dim)
        scale = dim ** -0.5
        visible = NEW * (CTX - NEW) + NEW * (NEW + 1) / 2  # keys each query sees, summed
        flops = 4 * dim * heads * visible

        def run(bm, bn, w, st):
            return pa.extend(q, kc, vc, table, cu, ctx, tiles(bm), scale, block_m=bm, block_n=bn, splits=1,
                             warps=w, stages=st)
        base = run(pa.EXTEND_TILE, 64, 4, 3)
        rows = []
        for bm, bn, w, st in itertools.product((64, 128), (32, 64, 128), (4, 8), (2, 3, 4)):
            try:
                got = run(bm, bn, w, st)
                err = (got.float() - base.float()).abs().max().item()
                ms = triton.testing.do_bench(lambda: run(bm, bn, w, st), warmup=5, rep=30)
            except Exception as e:  # out of shared memory, or registers: not a setting for this chip
                rows.append({"block_m": bm, "block_n": bn, "warps": w, "stages": st, "error": type(e).__name__})
                continue
            rows.append({"block_m": bm, "block_n": bn, "warps": w, "stages": st, "ms": round(ms, 3),
                         "tflops": round(flops / ms / 1e9, 1), "max_diff": err})
        good = sorted((r for r in rows if "ms" in r), key=lambda r: r["ms"])
        print(f"\n{name}: {NEW} queries after {CTX - NEW} cached, {heads}/{kv_heads} heads, dim {dim}")
        for r in good[:8] + [r for r in good if (r["block_m"], r["block_n"], r["warps"], r["stages"]) == (pa.EXTEND_TILE, 64, 4, 3)]:
            print(f"  m{r['block_m']:<4} n{r['block_n']:<4} w{r['warps']} s{r['stages']}  {r['ms']:8.3f} ms"
                  f"  {r['tflops']:6.1f} TFLOP/s  max diff to default {r['max_diff']:.3g}")
        out[name] = {"best": good[0], "default": next(r for r in good if (r["block_m"], r["block_n"], r["warps"],
                                                                           r["stages"]) == (pa.EXTEND_TILE, 64, 4, 3)),
                     "failed": sum(1 for r in rows if "error" in r)}
    emit("prefill_sweep", device=torch.cuda.get_device_name(), **out)


if __name__ == "__main__":
    main()
