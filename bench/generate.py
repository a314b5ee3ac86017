"""kb's generator against Hugging Face `generate`, in one process on random weights of real shapes
(bf16, greedy, end-of-sequence ignored so every request makes all its tokens):

(a) Qwen2.5-0.5B shape: batch-1 decode tokens/s; time to first token of a cold 2,304-token prompt
    and of 256 new tokens after a cached 2,048-token prefix; 16 requests sharing a 2,048-token
    prefix (32 tokens of their own), 64 new tokens each.
(b) Llama-2-7B shape, the prefix-sharing workload of the seed article: 107 requests of ~550 tokens
    sharing a 530-token prefix, and 500 of ~780 sharing 752, 30 new tokens each: total time and
    peak KV memory. HF runs left-padded micro-batches, the largest of 128/64/32/16 that fits.
(c), (d) One prompt's prefill time and peak memory: 32K tokens, Qwen2.5-0.5B shape; 128K tokens,
    Qwen2.5-7B shape with YaRN (factor 4 over 32K, as Qwen2.5's 128K configuration declares it).

    python bench/generate.py [--only a,b,c,d] [--tiny]    # --tiny: small shapes, CPU smoke test

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

QWEN_05B = dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", vocab_size=151936, hidden_size=896,
                intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                tie_word_embeddings=True)
LLAMA2_7B = dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=32000, hidden_size=4096,
                 intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                 max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)
QWEN_7B_YARN = dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", vocab_size=152064, hidden_size=3584,
                    intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                    max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=False,
                    rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768,
                                     "rope_theta": 1000000.0})
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=1000)

DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = torch.bfloat16 if DEV.type == "cuda" else torch.float32


def hf_model(shape: dict):
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    cfg = (Qwen2Config if shape["model_type"] == "qwen2" else LlamaConfig)(
        **{k: v for k, v in shape.items() if k != "model_type"})
    torch.manual_seed(0)
    with torch.device(DEV):
        model = AutoModelForCausalLM.from_config(cfg, dtype=DTYPE, attn_implementation="sdpa")
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model.eval()


def kb_engine(hf, shape: dict, **kw):
    """kb's engine over the very weights of `hf` (its projections fused into copies)."""
    from kb.rag.engine import Engine, EngineConfig
    from kb.rag.decoder import ModelConfig, build_model

    model = build_model(ModelConfig.from_dict(shape), hf.state_dict(), DEV, DTYPE)
    return Engine(EngineConfig(model="(random weights)", **kw), model=model)


def tokens(n: int, vocab: int, rng: random.Random) -> list[int]:
    return [rng.randrange(100, vocab) for _ in range(n)]


def peak_bytes(fn):
    """(seconds, result, bytes allocated at peak during fn above what was allocated before)."""
    if DEV.type != "cuda":
        return (*timed(fn), 0)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    s, out = timed(fn)
    return s, out, torch.cuda.max_memory_allocated() - base


def hf_generate(hf, prompts: list[list[int]], new: int, batch: int):
    """Left-padded micro-batches of `batch` prompts; returns the generated ids per prompt."""
    outs = []
    with torch.inference_mode():
        for i in range(0, len(prompts), batch):
            part = prompts[i:i + batch]
            width = max(map(len, part))
            ids = torch.tensor([[0] * (width - len(p)) + p for p in part], device=DEV)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in part], device=DEV)
            out = hf.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False)
            outs += out[:, width:].tolist()
    return outs


def hf_fitting_batch(hf, prompts, new: int, sizes=(128, 64, 32, 16, 8, 4, 2, 1)) -> int:
    for b in sizes:
        if b > len(prompts):
            continue
        try:
            hf_generate(hf, prompts[:b], 2, b)
            return b
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
    return 1


def kb_run(engine, prompts, new: int):
    from kb.rag.sampling import SamplingParams

    return engine.generate(prompts, SamplingParams(max_tokens=new, ignore_eos=True))


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


def workload_c(shape: dict, scale: int, n: int = 32000, key: str = "32k") -> dict:
    """One long prompt's prefill (1 new token), HF then kb: r[hf_KEY_s], r[kb_KEY_s] and memory."""
    rng = random.Random(3)
    n //= scale
    p = tokens(n, shape["vocab_size"], rng)
    hf = hf_model(shape)
    r: dict = {}
    try:
        s, _, peak = peak_bytes(lambda: hf_generate(hf, [p], 1, 1))
        r[f"hf_{key}_s"], r[f"hf_{key}_peak_gb"] = s, peak / 2**30
    except torch.OutOfMemoryError:
        r[f"hf_{key}_s"] = r[f"hf_{key}_peak_gb"] = None
        torch.cuda.empty_cache()
    eng = kb_engine(hf, shape, cache=_cache(0.5))
    del hf
    kb_run(eng, [tokens(9000 // scale, shape["vocab_size"], rng)], 1)  # compiles
    eng.radix.evict(eng.pool.num_blocks)
    s, out, peak = peak_bytes(lambda: kb_run(eng, [p], 1))
    kv = -(-n // eng.pool.block_size) * _block_bytes(eng)
    r[f"kb_{key}_s"], r[f"kb_{key}_kv_gb"], r[f"kb_{key}_other_peak_gb"] = s, kv / 2**30, peak / 2**30
    return r



def _block_bytes(engine) -> int:
    from kb.rag.kv_cache import block_bytes

    mc = engine.model.cfg
    return block_bytes(mc.num_layers, engine.pool.block_size, mc.num_kv_heads, mc.head_dim, DTYPE)


def _cache(fraction: float):
    from kb.rag.kv_cache import CacheConfig

    return CacheConfig(memory_fraction=fraction, cpu_bytes=2**28)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="a,b,c,d")
    ap.add_argument("--tiny", action="store_true", help="small shapes and lengths: a smoke test")
    args = ap.parse_args()
    scale = 8 if args.tiny else 1
    qwen = {**QWEN_05B, **(TINY if args.tiny else {})}
    llama = {**LLAMA2_7B, **(TINY if args.tiny else {})}
    qwen7 = {**QWEN_7B_YARN, **(TINY if args.tiny else {})}
    r: dict = {"device": torch.cuda.get_device_name() if DEV.type == "cuda" else "cpu", "tiny": args.tiny}
    d = lambda shape, scale: workload_c(shape, scale, 131072 - 64, "128k")  # noqa: E731
    for name, run, shape in (("a", workload_a, qwen), ("b", workload_b, llama), ("c", workload_c, qwen), ("d", d, qwen7)):
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
    row("(a) TTFT 2304 cold", "hf_ttft_cold_ms", "kb_ttft_cold_ms", "ms", "lower")
    row("(a) TTFT 256 after cached 2048", "hf_ttft_cold_ms", "kb_ttft_cached_ms", "ms", "lower")
    row("(a) 16 x (2048 shared + 32), 64 new", "hf_16_shared_s", "kb_16_shared_s", "s", "lower")
    row("(b) 107 x ~550 (530 shared), 30 new", "hf_107_s", "kb_107_s", "s", "lower")
    row("(b) 500 x ~780 (752 shared), 30 new", "hf_500_s", "kb_500_s", "s", "lower")
    row("(b) 107: peak KV memory", "hf_107_peak_gb", "kb_107_kv_gb", "GiB", "lower")
    row("(b) 500: peak KV memory", "hf_500_peak_gb", "kb_500_kv_gb", "GiB", "lower")
    row("(c) 32K prefill", "hf_32k_s", "kb_32k_s", "s", "lower")
    row("(d) 128K prefill, 7B shape, YaRN", "hf_128k_s", "kb_128k_s", "s", "lower")
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
