"""The attention kernels' launch settings for many sequences sharing a prefix, on a GPU: the steps
of the 500-request workload of bench/generate.py (b), Llama-2-7B heads (32, MHA, dim 128).

- decode: 512 sequences (the decode CUDA graph's size), each 752 shared tokens (the prefix pass
  reads them once) and 30 to 60 of its own, over key tiles (block_n), pipeline stages and warps;
- extend: 500 sequences of 28 new tokens each after the same 752 cached ones (a mixed step's
  prefills), over query tiles (block_m) and stages.

Each setting's output is compared with the current default's; times are the median of
triton.testing.do_bench (microseconds per layer). Prints a table per kernel, then one JSON line.

    python3 bench/batch_sweep.py
"""

from __future__ import annotations

import itertools
import random

import torch
import triton
from common import emit

from kb.kernels import paged_attention as pa
from kb.kernels import paged_decode as pd
from kb.rag.batch import Batch

HEADS, DIM, BS, SHARED, SEQS = 32, 128, 16, 752, 512


def cache(seqs: int, own: list[int]):
    """K/V caches and block tables: the shared prefix's blocks first in every table, then each
    sequence's own blocks."""
    shared = SHARED // BS
    tables, nxt = [], shared
    for n in own:
        mine = -(-n // BS)
        tables.append(list(range(shared)) + list(range(nxt, nxt + mine)))
        nxt += mine
    g = torch.Generator(device="cuda").manual_seed(0)
    kc = torch.randn(nxt, BS, HEADS, DIM, device="cuda", dtype=torch.bfloat16, generator=g)
    vc = torch.randn(nxt, BS, HEADS, DIM, device="cuda", dtype=torch.bfloat16, generator=g)
    return kc, vc, tables


def sweep(name: str, run, settings: list[dict], default: dict) -> dict:
    base = run(**default)
    rows = []
    for s in settings:
        try:
            err = (run(**s).float() - base.float()).abs().max().item()
            us = triton.testing.do_bench(lambda: run(**s), warmup=5, rep=40) * 1000
            rows.append({**s, "us": round(us, 1), "max_diff": err})
        except Exception as e:  # out of shared memory or registers: not a setting for this chip
            rows.append({**s, "error": type(e).__name__})
    good = sorted((r for r in rows if "us" in r), key=lambda r: r["us"])
    print(f"\n{name}")
    for r in good:
        mark = "  (default)" if all(r[k] == v for k, v in default.items()) else ""
        print("  " + " ".join(f"{k}={r[k]}" for k in default) + f"  {r['us']:8.1f} us  max diff {r['max_diff']:.3g}{mark}")
    return {"best": good[0], "default": next(r for r in good if all(r[k] == v for k, v in default.items()))}


def main() -> None:
    rng = random.Random(0)
    out = {}
    own = [rng.randint(30, 60) for _ in range(SEQS)]
    kc, vc, tables = cache(SEQS, own)
    ctx = [SHARED + n for n in own]
    batch = Batch.build([1] * SEQS, ctx, tables, BS, torch.device("cuda"), ids=[0] * SEQS, prefix_tile=pd.PREFIX_TILE)
    q = torch.randn(SEQS, HEADS, DIM, device="cuda", dtype=torch.bfloat16)

    def decode(block_n, stages, warps):
        return pd.decode(q, kc, vc, batch.block_tables, batch.ctx, DIM ** -0.5, batch.skip, batch.members,
                         batch.prefix_tiles, block_n=block_n, stages=stages, warps=warps)
    grid = [dict(block_n=n, stages=s, warps=w) for n, s, w in itertools.product((16, 32, 64, 128), (1, 2, 3), (2, 4, 8))]
    out["decode"] = sweep(f"decode: {SEQS} sequences, {SHARED} shared + 30..60 own, {HEADS} heads, dim {DIM}",
                          decode, grid, dict(block_n=128, stages=3, warps=4))

    new = [28] * 500
    kc, vc, tables = cache(500, new)
    ctx = [SHARED + n for n in new]
    batch = Batch.build(new, ctx, tables, BS, torch.device("cuda"), ids=[0] * sum(new))
    q = torch.randn(sum(new), HEADS, DIM, device="cuda", dtype=torch.bfloat16)

    def extend(block_m, block_n, stages, warps):
        return pa.extend(q, kc, vc, batch.block_tables, batch.cu_q, batch.ctx, batch.tiles(block_m), DIM ** -0.5,
                         block_m=block_m, block_n=block_n, splits=1, warps=warps, stages=stages)
    grid = [dict(block_m=m, block_n=n, stages=s, warps=w)
            for m, n, s, w in itertools.product((16, 32, 64, 128), (32, 64), (2, 3), (4, 8))]
    out["extend"] = sweep(f"extend: 500 x 28 new after {SHARED} cached, {HEADS} heads, dim {DIM}", extend, grid,
                          dict(block_m=pa.EXTEND_TILE, block_n=64, stages=3, warps=4))
    emit("batch_sweep", device=torch.cuda.get_device_name(), **out)


if __name__ == "__main__":
    main()
