"""kb's generator against Hugging Face `generate`, in one process on random weights of real shapes
(bf16, greedy, end-of-sequence ignored so every request makes all its tokens):

(a) Qwen2.5-0.5B shape: batch-1 decode tokens/s; time to first token of a cold 2,304-token prompt
    and of 256 new tokens after a cached 2,048-token prefix; 16 requests sharing a 2,048-token
    prefix (32 tokens of their own), 64 new tokens each.
(b) Llama-2-7B shape, the prefix-sharing workload of the seed article: 107 requests of ~550 tokens
    sharing a 530-token prefix, and 500 of ~780 sharing 752, 30 new tokens each: total time and
    peak KV memory. HF runs left-padded micro-batches, the largest of 128/64/32/16 that fits.
(c), (d) One prompt's prefill time, TFLOP/s and peak memory: 32K tokens, Qwen2.5-0.5B shape; 128K
    tokens, Qwen2.5-7B shape with YaRN (factor 4 over 32K, as Qwen2.5's 128K configuration declares it).
(e) Batch-1 decode after 16K and 30K prompts against a short one; (f) prompt-lookup speculation
    on and off. (c) to (f) live in bench/generate_long.py.

    python bench/generate.py [--only a,b,c,d,e,f] [--tiny]    # --tiny: small shapes, CPU smoke test

kb runs warm (each workload first runs on other random prompts of its shapes, as HF's batch
probing does for it), then times a run from an empty prefix cache. Peak memory: for HF the peak
allocated above what was before the run (KV, activations, logits); for kb the KV blocks held at
once (its pool is allocated at start) plus the peak of everything else. Ends with a JSON line.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics

import torch
from common import emit, timed
from gen_common import (DEV, DTYPE, LLAMA2_7B, QWEN_05B, QWEN_7B_YARN, TINY, _block_bytes, _cache, hf_fitting_batch,
                        hf_generate, hf_model, kb_engine, kb_run, peak_bytes, tokens)
from generate_long import workload_c, workload_e, workload_f


def workload_a(shape: dict, scale: int) -> dict:
    rng = random.Random(1)
    vocab = shape["vocab_size"]
    hf = hf_model(shape)
    r: dict = {}
    # batch-1 decode
    p = tokens(32, vocab, rng)
    hf_generate(hf, [p], 8, 1)
    s, _ = timed(lambda: hf_generate(hf, [p], 256 // scale, 1))
    r["hf_decode_tok_s"] = 256 // scale / s
    cold, warm_prefix = 2304 // scale, 2048 // scale
    colds = [tokens(cold, vocab, rng) for _ in range(3)]
    times = [timed(lambda: hf_generate(hf, [c], 1, 1))[0] for c in colds]
    r["hf_ttft_cold_ms"] = statistics.median(times[1:]) * 1000
    shared = tokens(warm_prefix, vocab, rng)
    group = [shared + tokens(32, vocab, rng) for _ in range(16)]
    s, _ = timed(lambda: hf_generate(hf, group, 64 // scale, 16))
    r["hf_16_shared_s"] = s

    eng = kb_engine(hf, shape, cache=_cache(0.6))
    kb_run(eng, [tokens(40, vocab, rng)], 8)  # compiles the kernels for prefill shapes
    s, out = timed(lambda: kb_run(eng, [p], 256 // scale))
    r["kb_decode_tok_s"] = 256 // scale / s
    r["kb_decode_tok_s_steady"] = out[0].decode_tokens_per_s
    if eng.runner.graphs is not None:  # the profile of a decode step: the graph alone against the whole step
        graph = eng.runner.graphs.decode_graphs[1][0]
        s, _ = timed(lambda: [graph.replay() for _ in range(200)])
        r["kb_decode_graph_ms"] = s / 200 * 1000
        r["kb_decode_step_ms"] = 1000 / r["kb_decode_tok_s_steady"]
        r.update(without_look_ahead(eng, p, out[0].token_ids, scale))
        r.update(without_dependent_launch(hf, shape, p, out[0].token_ids, scale))
    colds, warms, cached, walls = [], [], [], []
    for _ in range(6):  # the first captures the CUDA graph of each size
        s, out = timed(lambda: kb_run(eng, [tokens(cold, vocab, rng)], 1))
        colds.append(out[0].ttft_s)
        prefix = tokens(warm_prefix, vocab, rng)
        kb_run(eng, [prefix], 1)
        s2, out = timed(lambda: kb_run(eng, [prefix + tokens(cold - warm_prefix, vocab, rng)], 1))
        warms.append(out[0].ttft_s)
        walls.append((s, s2))
        cached.append(out[0].cached_tokens)
    # TTFT as the engine reports it: from the request's arrival to its first token (the prefix
    # cache's bookkeeping after that token is not in it); the run's wall time beside it
    r["kb_ttft_cold_ms"] = statistics.median(colds[1:]) * 1000
    r["kb_ttft_cached_ms"] = statistics.median(warms[1:]) * 1000
    r["kb_ttft_cold_wall_ms"] = statistics.median(w[0] for w in walls[1:]) * 1000
    r["kb_ttft_cached_wall_ms"] = statistics.median(w[1] for w in walls[1:]) * 1000
    r["kb_cached_tokens"] = cached[-1]
    for _ in range(2):  # the first run compiles the kernels' variants for a mixed step
        eng.radix.evict(eng.pool.num_blocks)
        shared = tokens(warm_prefix, vocab, rng)
        group = [shared + tokens(32, vocab, rng) for _ in range(16)]
        s, out = timed(lambda: kb_run(eng, group, 64 // scale))
    r["kb_16_shared_s"] = s
    del eng, hf
    return r


def without_look_ahead(eng, p: list[int], want: list[int], scale: int) -> dict:
    """Batch-1 decode on the same engine with each step run only once the last one's token is on
    the host (kb.rag.ahead off): its steady speed and step, the same tokens."""
    eng.runner.runs_ahead = False
    eng.radix.evict(eng.pool.num_blocks)
    try:
        out = kb_run(eng, [p], 256 // scale)
    finally:
        eng.runner.runs_ahead = True
    steady = out[0].decode_tokens_per_s
    return dict(kb_decode_tok_s_steady_no_ahead=steady, kb_decode_step_ms_no_ahead=1000 / steady,
                kb_ahead_same_tokens=out[0].token_ids == want)


def without_dependent_launch(hf, shape: dict, p: list[int], want: list[int], scale: int) -> dict:
    """Batch-1 decode with the decode kernels launched plainly (kb.kernels.paged_attention.PDL
    off), against the engine above: its graph's replay, its steady speed, the same tokens."""
    from kb.kernels import paged_attention

    if not paged_attention.PDL:
        return {}
    paged_attention.PDL = False
    try:
        eng = kb_engine(hf, shape, cache=_cache(0.3))
        kb_run(eng, [p[:16]], 8)
        out = kb_run(eng, [p], 256 // scale)
        graph = eng.runner.graphs.decode_graphs[1][0]
        s, _ = timed(lambda: [graph.replay() for _ in range(200)])
    finally:
        paged_attention.PDL = True
    return dict(kb_decode_graph_ms_no_pdl=s / 200 * 1000, kb_decode_tok_s_steady_no_pdl=out[0].decode_tokens_per_s,
                kb_pdl_same_tokens=out[0].token_ids == want)


def workload_b(shape: dict, scale: int) -> dict:
    rng = random.Random(2)
    vocab = shape["vocab_size"]
    hf = hf_model(shape)
    cases = {"107": (107, 530 // scale, (15, 25)), "500": (500, 752 // scale, (23, 33))}

    def make(n, shared_len, lo, hi):
        shared = tokens(shared_len, vocab, rng)
        return [shared + tokens(rng.randint(lo // scale + 1, hi // scale + 1), vocab, rng) for _ in range(n)]
    prompts = {name: make(n, shared_len, *own) for name, (n, shared_len, own) in cases.items()}
    warmup = {name: make(n, shared_len, *own) for name, (n, shared_len, own) in cases.items()}
    r: dict = {}
    for name, ps in prompts.items():
        batch = hf_fitting_batch(hf, ps, 30) if DEV.type == "cuda" else 16
        s, _, peak = peak_bytes(lambda: hf_generate(hf, ps, 30, batch))
        r[f"hf_{name}_s"], r[f"hf_{name}_peak_gb"], r[f"hf_{name}_batch"] = s, peak / 2**30, batch
    eng = kb_engine(hf, shape, max_seqs=512, cache=_cache(0.9))
    del hf
    kb_run(eng, [tokens(40, vocab, rng), tokens(300, vocab, rng)], 4)  # compile prefill shapes
    for name, ps in prompts.items():
        kb_run(eng, warmup[name], 30)  # a warm process: kernels compiled, CUDA graphs captured
        eng.radix.evict(eng.pool.num_blocks)
        eng.pool.peak_used = eng.pool.num_blocks - eng.pool.num_free
        before = eng.pool.peak_used
        s, out, peak = peak_bytes(lambda: kb_run(eng, ps, 30))
        assert all(len(o.token_ids) == 30 for o in out)
        r[f"kb_{name}_s"] = s
        r[f"kb_{name}_kv_gb"] = (eng.pool.peak_used - before) * _block_bytes(eng) / 2**30
        r[f"kb_{name}_other_peak_gb"] = peak / 2**30
        r[f"kb_{name}_cached_tokens"] = sum(o.cached_tokens for o in out)
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="a,b,c,d,e,f")
    ap.add_argument("--tiny", action="store_true", help="small shapes and lengths: a smoke test")
    args = ap.parse_args()
    scale = 8 if args.tiny else 1
    qwen = {**QWEN_05B, **(TINY if args.tiny else {})}
    llama = {**LLAMA2_7B, **(TINY if args.tiny else {})}
    qwen7 = {**QWEN_7B_YARN, **(TINY if args.tiny else {})}
    r: dict = {"device": torch.cuda.get_device_name() if DEV.type == "cuda" else "cpu", "tiny": args.tiny}
    d = lambda shape, scale: workload_c(shape, scale, 131072 - 64, "128k")  # noqa: E731
    runs = (("a", workload_a, qwen), ("b", workload_b, llama), ("c", workload_c, qwen), ("d", d, qwen7),
            ("e", workload_e, qwen), ("f", workload_f, qwen))
    for name, run, shape in runs:
        if name in args.only:
            r.update(run(shape, scale))
            gc.collect()  # a model runner and its CUDA graphs refer to each other
            if DEV.type == "cuda":
                torch.cuda.empty_cache()
    print_table(r)
    emit("generate", **{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items() if k != "device"})


def print_table(r: dict) -> None:
    rows = []

    def row(name, hf, kb, unit, better="higher"):
        if hf in r and kb in r and r[hf] and r[kb]:
            ratio = r[kb] / r[hf] if better == "higher" else r[hf] / r[kb]
            rows.append((name, f"{r[hf]:.3g} {unit}", f"{r[kb]:.3g} {unit}", f"{ratio:.1f}x"))
    row("(a) batch-1 decode", "hf_decode_tok_s", "kb_decode_tok_s", "tok/s")
    row("(a) decode step: one at a time / queued ahead", "kb_decode_step_ms_no_ahead", "kb_decode_step_ms", "ms",
        "lower")
    row("(a) decode graph: plain launches / dependent", "kb_decode_graph_ms_no_pdl", "kb_decode_graph_ms", "ms",
        "lower")
    row("(a) TTFT 2304 cold", "hf_ttft_cold_ms", "kb_ttft_cold_ms", "ms", "lower")
    row("(a) TTFT 256 after cached 2048", "hf_ttft_cold_ms", "kb_ttft_cached_ms", "ms", "lower")
    row("(a) 16 x (2048 shared + 32), 64 new", "hf_16_shared_s", "kb_16_shared_s", "s", "lower")
    row("(b) 107 x ~550 (530 shared), 30 new", "hf_107_s", "kb_107_s", "s", "lower")
    row("(b) 500 x ~780 (752 shared), 30 new", "hf_500_s", "kb_500_s", "s", "lower")
    row("(b) 107: peak KV memory", "hf_107_peak_gb", "kb_107_kv_gb", "GiB", "lower")
    row("(b) 500: peak KV memory", "hf_500_peak_gb", "kb_500_kv_gb", "GiB", "lower")
    row("(c) 32K prefill", "hf_32k_s", "kb_32k_s", "s", "lower")
    row("(c) 32K prefill, achieved", "hf_32k_tflops", "kb_32k_tflops", "TFLOP/s")
    row("(d) 128K prefill, 7B shape, YaRN", "hf_128k_s", "kb_128k_s", "s", "lower")
    row("(d) 128K prefill, achieved", "hf_128k_tflops", "kb_128k_tflops", "TFLOP/s")
    for key in ("short", "16k", "30k"):
        row(f"(e) batch-1 decode after {key} prompt", f"hf_decode_{key}_tok_s", f"kb_decode_{key}_tok_s", "tok/s")
    row("(e) decode after 30K / after short", "hf_decode_30k_vs_short", "kb_decode_30k_vs_short", "")
    row("(f) speculation off / on (kb)", "kb_speculate_off_tok_s", "kb_speculate_on_tok_s", "tok/s")
    print(f"\n{r['device']}{' (tiny shapes)' if r['tiny'] else ''}, {DTYPE} random weights, greedy\n"
          f"{'workload':40}{'HF generate':>16}{'kb':>16}{'kb vs HF':>10}")
    for name, hf, kb, ratio in rows:
        print(f"{name:40}{hf:>16}{kb:>16}{ratio:>10}")
    if "kb_ttft_cold_wall_ms" in r:
        print(f"(a) TTFT, whole kb_run wall time: cold {r['kb_ttft_cold_wall_ms']:.2f} ms, cached "
              f"{r['kb_ttft_cached_wall_ms']:.2f} ms; cached/cold {r['kb_ttft_cached_ms'] / r['kb_ttft_cold_ms']:.2f}")
    if "kb_decode_graph_ms" in r:
        print(f"(a) decode step: {r['kb_decode_step_ms']:.2f} ms, of which the CUDA graph's replay "
              f"{r['kb_decode_graph_ms']:.2f} ms (the rest: scheduling, inputs, sampling)")
    for key, name in (("32k", "(c) 32K"), ("128k", "(d) 128K")):
        if f"kb_{key}_kv_gb" in r:
            print(f"{name} memory: HF peak {r.get(f'hf_{key}_peak_gb') or float('nan'):.2f} GiB; kb KV "
                  f"{r[f'kb_{key}_kv_gb']:.2f} GiB + other peak {r[f'kb_{key}_other_peak_gb']:.2f} GiB")


if __name__ == "__main__":
    main()
