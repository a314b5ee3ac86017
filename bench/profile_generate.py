"""Where a decode step and a cached-prefix prefill spend their time (kb's engine, random weights of
the Qwen2.5-0.5B shape, bf16): GPU time per kernel from torch.profiler, and the host's cost of
one launch (a torch op and a Triton kernel) on this machine.

    python bench/profile_generate.py
"""

from __future__ import annotations

import random
import time

import torch

from generate import QWEN_05B, hf_model, kb_engine, kb_run, tokens


def launch_cost() -> dict:
    from kb.kernels.fused import rms_norm

    x = torch.randn(1, 896, device="cuda", dtype=torch.bfloat16)
    w = torch.ones(896, device="cuda", dtype=torch.bfloat16)
    out = {}
    for name, fn in (("torch add_", lambda: x.add_(0)), ("triton rms_norm", lambda: rms_norm(x, w, 1e-6))):
        fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(1000):
            fn()
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        out[name] = (t1 - t0) * 1000  # microseconds per launch, host side
    return out


def profile(fn, title: str, steps: int = 5) -> None:
    from torch.profiler import ProfilerActivity, profile as prof

    fn()
    torch.cuda.synchronize()
    with prof(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    print(f"\n== {title} ({steps} runs)")
    print(p.key_averages().table(sort_by="self_cuda_time_total", row_limit=14, max_name_column_width=60))


def graph_replay_ms(hf) -> dict:
    """A batch-1 decode graph's replay time against the longest context the cache can hold
    (which fixes the decode kernel's grid)."""
    from kb.rag.kv_cache import CacheConfig

    out = {}
    for blocks in (64, 256, 2048):
        eng = kb_engine(hf, QWEN_05B, cache=CacheConfig(num_blocks=blocks + 1), max_seqs=1)
        kb_run(eng, [list(range(100, 132))], 4)
        graph = eng.graphs.graphs[1][0]
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(200):
            graph.replay()
        torch.cuda.synchronize()
        out[f"max_ctx {eng.graphs.max_ctx}"] = round((time.perf_counter() - t0) / 200 * 1000, 3)
        del eng
    return out


def main() -> None:
    rng = random.Random(0)
    print("host cost of one launch (us):", {k: round(v, 1) for k, v in launch_cost().items()})
    hf = hf_model(QWEN_05B)
    print("decode graph replay (ms):", graph_replay_ms(hf))
    eng = kb_engine(hf, QWEN_05B, cuda_graphs=False)
    del hf
    p = tokens(32, QWEN_05B["vocab_size"], rng)
    profile(lambda: kb_run(eng, [p], 8), "batch-1 decode, 8 tokens, no CUDA graphs")
    prefix = tokens(2048, QWEN_05B["vocab_size"], rng)
    kb_run(eng, [prefix], 1)
    profile(lambda: kb_run(eng, [prefix + tokens(256, QWEN_05B["vocab_size"], rng)], 1),
            "256 new tokens after a cached 2048-token prefix")


if __name__ == "__main__":
    main()
