"""The long-context and speculation workloads of bench/generate.py (same conventions: kb and HF in
one process on random weights of real shapes, bf16, greedy):

(c), (d) One prompt's prefill time, achieved TFLOP/s and peak memory: 32K tokens, Qwen2.5-0.5B
    shape; 128K tokens, Qwen2.5-7B shape with YaRN. HF runs the same prompt once untimed first
    (its first run pays for allocations and kernel selection).
(e) Batch-1 decode after a 16K and a 30K prompt (Qwen2.5-0.5B shape), against decode after a short
    prompt: kb's steady tokens/s; HF's from the time of 33 new tokens less that of 1.
(f) Prompt-lookup speculation on and off (kb only): prompts that repeat a passage, so that greedy
    continuations of a random model copy from it as answers copy their sources; outputs must be
    identical.
"""

from __future__ import annotations

import random

import torch
from common import timed
from gen_common import DEV, _block_bytes, _cache, hf_generate, hf_model, kb_engine, kb_run, peak_bytes, tokens


def prefill_flops(shape: dict, n: int) -> float:
    """Multiply-adds x 2 of an n-token causal prefill: the layers' projections and attention."""
    h, inter, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    heads, kv = shape["num_attention_heads"], shape["num_key_value_heads"]
    dim = h // heads
    linear = layers * (h * (heads + 2 * kv) * dim + heads * dim * h + 3 * h * inter)
    attention = layers * heads * 2 * n * n * dim  # QK^T and PV over the causal half
    return 2.0 * n * linear + attention


def workload_c(shape: dict, scale: int, n: int = 32000, key: str = "32k") -> dict:
    """One long prompt's prefill (1 new token), HF then kb: r[hf_KEY_s], r[kb_KEY_s], TFLOP/s, memory."""
    rng = random.Random(3)
    n //= scale
    p = tokens(n, shape["vocab_size"], rng)
    hf = hf_model(shape)
    r: dict = {}
    try:
        hf_generate(hf, [tokens(n, shape["vocab_size"], rng)], 1, 1)  # warm-up, untimed
        s, _, peak = peak_bytes(lambda: hf_generate(hf, [p], 1, 1))
        r[f"hf_{key}_s"], r[f"hf_{key}_peak_gb"] = s, peak / 2**30
    except torch.OutOfMemoryError:
        r[f"hf_{key}_s"] = r[f"hf_{key}_peak_gb"] = None
        torch.cuda.empty_cache()
    eng = kb_engine(hf, shape, cache=_cache(0.5))
    del hf
    kb_run(eng, [tokens(n, shape["vocab_size"], rng)], 1)  # compiles, at the same chunk sizes
    eng.radix.evict(eng.pool.num_blocks)
    s, out, peak = peak_bytes(lambda: kb_run(eng, [p], 1))
    kv = -(-n // eng.pool.block_size) * _block_bytes(eng)
    r[f"kb_{key}_s"], r[f"kb_{key}_kv_gb"], r[f"kb_{key}_other_peak_gb"] = s, kv / 2**30, peak / 2**30
    flops = prefill_flops(shape, n)
    for who in ("hf", "kb"):
        if r.get(f"{who}_{key}_s"):
            r[f"{who}_{key}_tflops"] = flops / r[f"{who}_{key}_s"] / 1e12
    return r


def workload_e(shape: dict, scale: int) -> dict:
    """Batch-1 decode tokens/s after a short, a 16K and a 30K prompt."""
    rng = random.Random(4)
    vocab = shape["vocab_size"]
    hf = hf_model(shape)
    lengths = {"short": 32, "16k": 16000 // scale, "30k": 30000 // scale}
    r: dict = {}
    for key, n in lengths.items():
        p = tokens(n, vocab, rng)
        hf_generate(hf, [p], 2, 1)
        one, _ = timed(lambda: hf_generate(hf, [p], 1, 1))
        more, _ = timed(lambda: hf_generate(hf, [p], 33, 1))
        r[f"hf_decode_{key}_tok_s"] = 32 / max(more - one, 1e-9)
    eng = kb_engine(hf, shape, cache=_cache(0.5))
    del hf
    for key, n in lengths.items():
        kb_run(eng, [tokens(n, vocab, rng)], 8)  # compiles, captures
        r[f"kb_decode_{key}_tok_s"] = kb_run(eng, [tokens(n, vocab, rng)], 257 // scale)[0].decode_tokens_per_s
    for who in ("hf", "kb"):
        r[f"{who}_decode_30k_vs_short"] = r[f"{who}_decode_30k_tok_s"] / r[f"{who}_decode_short_tok_s"]
    return r


def workload_f(shape: dict, scale: int, k: int = 8) -> dict:
    """Decode tokens/s with prompt-lookup speculation off and on, 8 prompts that repeat a passage."""
    rng = random.Random(5)
    vocab = shape["vocab_size"]
    hf = hf_model(shape)
    eng = kb_engine(hf, shape, cache=_cache(0.5))
    del hf
    prompts = []
    for _ in range(8):
        passage = tokens(400 // scale, vocab, rng)
        prompts.append(passage + tokens(16, vocab, rng) + passage[:40 // scale])
    r: dict = {}
    outs = {}
    for on in (0, k, 0, k):  # the first of each compiles and captures
        eng.scheduler.speculate = on
        outs[on] = [kb_run(eng, [p], 128 // scale)[0] for p in prompts]
    for on, name in ((0, "off"), (k, "on")):
        secs = sum((len(o.token_ids) - 1) / o.decode_tokens_per_s for o in outs[on] if o.decode_tokens_per_s)
        r[f"kb_speculate_{name}_tok_s"] = sum(len(o.token_ids) - 1 for o in outs[on]) / secs
    r["kb_speculate_same_text"] = [o.token_ids for o in outs[0]] == [o.token_ids for o in outs[k]]
    r["kb_speculate_speedup"] = r["kb_speculate_on_tok_s"] / r["kb_speculate_off_tok_s"]
    return r
