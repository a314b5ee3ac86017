"""Where kb's generator spends its time (random bf16 weights): a Qwen2.5-0.5B decode step and a cached-prefix
prefill, GPU time per kernel (torch.profiler) and a launch's host cost; `--workload b`: bench/generate.py's
500-request Llama-2-7B workload, steps by kind and kernels; `b-hf`: it in the bench's order, and variants.

    python bench/profile_generate.py [--workload a|b|b-hf] [--steps] [--extend-sweep]
"""

from __future__ import annotations

import argparse
import random
import time
from collections import defaultdict

import torch
from common import emit, timed
from gen_common import LLAMA2_7B, QWEN_05B, _cache, hf_model, kb_engine, kb_run, tokens


def tiny_kernels() -> list:
    """(name, launch) of two tiny kernels: a torch op and a Triton kernel."""
    from kb.kernels.fused import rms_norm

    x = torch.randn(1, 896, device="cuda", dtype=torch.bfloat16)
    w = torch.ones(896, device="cuda", dtype=torch.bfloat16)
    return [("torch add_", lambda: x.add_(0)), ("triton rms_norm", lambda: rms_norm(x, w, 1e-6))]


def launch_cost() -> dict:
    out = {}
    for name, fn in tiny_kernels():
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
    """A batch-1 decode graph's replay time for caches of three sizes (its tables' width)."""
    from kb.rag.kv_cache import CacheConfig

    out = {}
    for blocks in (64, 256, 2048):
        eng = kb_engine(hf, QWEN_05B, cache=CacheConfig(num_blocks=blocks + 1), max_seqs=1)
        kb_run(eng, [list(range(100, 132))], 4)
        graph = eng.runner.graphs.decode_graphs[1][0]
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(200):
            graph.replay()
        torch.cuda.synchronize()
        out[f"max_ctx {eng.runner.graphs.max_ctx}"] = round((time.perf_counter() - t0) / 200 * 1000, 3)
        del eng
    return out


class StepTimer:
    """An engine's steps timed by kind (decode, one prefill, mixed), with a sync around each."""

    def __init__(self, eng):
        self.eng, self.stats = eng, defaultdict(lambda: [0, 0.0, 0])  # kind -> steps, seconds, seqs
        self._schedule, self._step, self._plan = eng.scheduler.schedule, eng.step, []
        self.on = True
        eng.scheduler.schedule, eng.step = self._timed_schedule, self._timed_step

    def _timed_schedule(self):
        t0 = time.perf_counter()
        self._plan = self._schedule()
        self._add("schedule (host)", time.perf_counter() - t0, len(self._plan))
        return self._plan

    def _timed_step(self):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        self._step()
        torch.cuda.synchronize()
        plan = self._plan
        kind = ("decode" if all(n == 1 for _, n in plan) else
                f"prefill {plan[0][1]} tokens" if len(plan) == 1 else "mixed")
        self._add(kind, time.perf_counter() - t0, len(plan))

    def _add(self, kind, sec, seqs):
        if not self.on:
            return
        st = self.stats[kind]
        st[0], st[1], st[2] = st[0] + 1, st[1] + sec, st[2] + seqs

    def report(self, title: str, runs: int = 1) -> None:
        print(f"\n== {title}")
        for kind, (n, sec, seqs) in self.stats.items():
            print(f"{kind:24} {n / runs:7.1f} steps/run {sec / runs * 1000:9.2f} ms/run "
                  f"{sec / max(n, 1) * 1000:8.2f} ms/step {seqs / max(n, 1):6.1f} seqs/step")
        self.stats.clear()

    def close(self) -> None:
        self.eng.scheduler.schedule, self.eng.step = self._schedule, self._step


def steps_a() -> None:
    """Cold and cached time to first token and the 16 sharers of workload (a), step by step."""
    rng = random.Random(1)
    vocab = QWEN_05B["vocab_size"]
    hf = hf_model(QWEN_05B)
    eng = kb_engine(hf, QWEN_05B, cache=_cache(0.6))
    del hf
    kb_run(eng, [tokens(40, vocab, rng)], 8)
    for _ in range(2):  # the first run of a size captures its prefill graph
        kb_run(eng, [tokens(2304, vocab, rng)], 1)
        prefix = tokens(2048, vocab, rng)
        kb_run(eng, [prefix], 1)
        kb_run(eng, [prefix + tokens(256, vocab, rng)], 1)
    timer = StepTimer(eng)
    walls = []
    for _ in range(3):
        walls.append(timed(lambda: kb_run(eng, [tokens(2304, vocab, rng)], 1))[0])
    timer.report(f"cold 2304 tokens, 3 runs, wall {[round(w * 1000, 2) for w in walls]} ms", 3)
    walls = []
    for _ in range(3):
        prefix = tokens(2048, vocab, rng)
        timer.on = False
        kb_run(eng, [prefix], 1)
        timer.on = True
        walls.append(timed(lambda: kb_run(eng, [prefix + tokens(256, vocab, rng)], 1))[0])
    timer.report(f"256 after a cached 2048, 3 runs, wall {[round(w * 1000, 2) for w in walls]} ms", 3)
    for _ in range(2):
        eng.radix.evict(eng.pool.num_blocks)
        shared = tokens(2048, vocab, rng)
        s, _ = timed(lambda: kb_run(eng, [shared + tokens(32, vocab, rng) for _ in range(16)], 64))
        timer.report(f"16 x (2048 shared + 32), 64 new: {s:.3f} s")
    timer.close()
    p = tokens(32, vocab, rng)
    profile(lambda: kb_run(eng, [p], 16), "batch-1 decode, 16 tokens, CUDA graphs", steps=3)
    prefix = tokens(2048, vocab, rng)
    kb_run(eng, [prefix], 1)
    profile(lambda: kb_run(eng, [prefix + tokens(256, vocab, rng)], 1),
            "256 new tokens after a cached 2048-token prefix, CUDA graphs", steps=3)


def steps_b(requests: int = 500, shared_len: int = 752) -> None:
    rng = random.Random(2)
    vocab = LLAMA2_7B["vocab_size"]
    hf = hf_model(LLAMA2_7B)
    eng = kb_engine(hf, LLAMA2_7B, max_seqs=512, cache=_cache(0.9))
    del hf
    shared = tokens(shared_len, vocab, rng)
    prompts = [shared + tokens(rng.randint(24, 34), vocab, rng) for _ in range(requests)]
    kb_run(eng, [tokens(40, vocab, rng), tokens(300, vocab, rng)], 4)
    eng.radix.evict(eng.pool.num_blocks)
    kb_run(eng, prompts, 30)
    timer = StepTimer(eng)
    eng.radix.evict(eng.pool.num_blocks)
    s, _ = timed(lambda: kb_run(eng, prompts, 30))
    timer.report(f"{requests} requests (Llama-2-7B shape): {s:.2f} s")
    timer.close()
    profile(lambda: (eng.radix.evict(eng.pool.num_blocks), kb_run(eng, prompts, 30)),
            f"{requests} requests, kernels", steps=1)


def b_after_hf(requests: int = 500) -> None:
    """Workload (b) in the bench's order (an HF run, then the engine; `peak_bytes` empties the
    allocator before the timed run), then without emptying it, on the prompts just run, and with
    GC off: each run's steps by kind and its time in Python's garbage collector."""
    import gc

    from gen_common import hf_generate, peak_bytes

    rng, vocab, pauses, since = random.Random(2), LLAMA2_7B["vocab_size"], [], {}
    gc.callbacks.append(hook := lambda phase, info: since.update(t=time.perf_counter()) if phase == "start"
                        else pauses.append(time.perf_counter() - since["t"]))

    def prompts():
        shared = tokens(752, vocab, rng)
        return [shared + tokens(rng.randint(24, 34), vocab, rng) for _ in range(requests)]
    hf = hf_model(LLAMA2_7B)
    hf_generate(hf, prompts()[:256], 30, 128)
    eng = kb_engine(hf, LLAMA2_7B, max_seqs=512, cache=_cache(0.9))
    del hf
    kb_run(eng, [tokens(40, vocab, rng), tokens(300, vocab, rng)], 4)
    kb_run(eng, prompts(), 30)
    timer, p = StepTimer(eng), prompts()
    for label in ("as the bench (empty_cache first)", "allocator kept", "the prompts just run", "gc off"):
        p = p if label == "the prompts just run" else prompts()
        if label == "gc off":
            gc.disable()
        eng.radix.evict(eng.pool.num_blocks)
        pauses.clear()
        run = lambda: kb_run(eng, p, 30)  # noqa: E731
        s = peak_bytes(run)[0] if label.startswith("as the bench") else timed(run)[0]
        timer.report(f"kb {requests} requests, {label}: {s:.3f} s; gc {len(pauses)} runs, {sum(pauses) * 1000:.1f} ms")
    gc.enable()
    gc.callbacks.remove(hook)
    timer.close()


def extend_sweep() -> None:
    """The extend kernel alone for a question after its context (256 new tokens, 2,048 cached;
    Qwen2.5-0.5B heads), over query tiles and key splits: microseconds per layer."""
    from kb.kernels.paged_attention import extend
    from kb.rag.batch import Batch

    heads, kv_heads, dim, bs = 14, 2, 64, 16
    for new, ctx in ((256, 2304), (64, 2112), (2304, 2304)):
        blocks = -(-ctx // bs)
        kc = torch.randn((blocks, bs, kv_heads, dim), device="cuda", dtype=torch.bfloat16)
        vc = torch.randn_like(kc)
        q = torch.randn((new, heads, dim), device="cuda", dtype=torch.bfloat16)
        batch = Batch.build([new], [ctx], [list(range(blocks))], bs, torch.device("cuda"))
        row = {}
        for tile in (16, 32, 64):
            for splits in (1, 2, 4, 8):
                fn = lambda: extend(q, kc, vc, batch.block_tables, batch.cu_q, batch.ctx,  # noqa: E731
                                    batch.tiles(tile), 0.125, block_m=tile, splits=splits)
                fn()
                torch.cuda.synchronize()
                graph = torch.cuda.CUDAGraph()  # 50 calls in a graph: GPU time, not launch cost
                with torch.cuda.graph(graph):
                    for _ in range(50):
                        fn()
                graph.replay()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                graph.replay()
                end.record()
                torch.cuda.synchronize()
                row[f"{tile}x{splits}"] = round(start.elapsed_time(end) / 50 * 1000, 1)
        print(f"extend {new} new after {ctx - new} cached (us, tile x splits):", row)
    print("a CUDA graph's cost per node (us):", graph_node_cost())


def graph_node_cost(nodes: int = 200) -> dict:
    """Replay time per node of a graph of tiny kernels: a torch op, a Triton kernel."""
    out = {}
    for name, fn in tiny_kernels():
        fn()
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(nodes):
                fn()
        graph.replay()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(20):
            graph.replay()
        torch.cuda.synchronize()
        out[name] = round((time.perf_counter() - t0) / 20 / nodes * 1e6, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", default="a")
    ap.add_argument("--steps", action="store_true", help="time steps by kind instead of profiling kernels")
    ap.add_argument("--extend-sweep", action="store_true")
    args = ap.parse_args()
    if args.extend_sweep:
        return extend_sweep()
    if args.workload == "b":
        return steps_b()
    if args.workload == "b-hf":
        return b_after_hf()
    if args.steps:
        return steps_a()
    rng = random.Random(0)
    launches = {k: round(v, 1) for k, v in launch_cost().items()}
    print("host cost of one launch (us):", launches)
    hf = hf_model(QWEN_05B)
    replays = graph_replay_ms(hf)
    print("decode graph replay (ms):", replays)
    eng = kb_engine(hf, QWEN_05B, cuda_graphs=False)
    del hf
    p = tokens(32, QWEN_05B["vocab_size"], rng)
    profile(lambda: kb_run(eng, [p], 8), "batch-1 decode, 8 tokens, no CUDA graphs")
    prefix = tokens(2048, QWEN_05B["vocab_size"], rng)
    kb_run(eng, [prefix], 1)
    profile(lambda: kb_run(eng, [prefix + tokens(256, QWEN_05B["vocab_size"], rng)], 1),
            "256 new tokens after a cached 2048-token prefix")
    emit("profile_generate", launch_us=launches, decode_graph_replay_ms=replays)


if __name__ == "__main__":
    main()
