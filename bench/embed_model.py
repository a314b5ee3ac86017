"""The model-only half of bench/embed_gpu.py: token ids in, vectors out, on one batch of chunks.
kb's packed encoder against Hugging Face (fp32 for correctness, bf16 SDPA for speed), its GEMM
paths and batch sizes, the GPU feed's batches eager and as CUDA graphs, two GPUs, and optionally
the attention kernel's tile configurations and a kernel profile."""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from common import best_of

ATTENTION_CONFIGS = [(64, 64, 4, 2), (64, 64, 4, 3), (64, 32, 4, 2), (64, 128, 4, 2), (128, 32, 4, 2),
                     (128, 32, 8, 2), (128, 64, 4, 2), (128, 64, 8, 2), (128, 64, 8, 3), (128, 128, 8, 2),
                     (32, 64, 2, 2), (32, 32, 2, 2)]


def cosines(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """The cosine between each row of `ref` and the same row of `got`."""
    return (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))


def hf_embed(model, inputs: list[np.ndarray], batch: int) -> np.ndarray:
    """Hugging Face's padded forward over length-sorted batches, mean-pooled and normalised."""
    import torch

    order = np.argsort([len(x) for x in inputs], kind="stable")
    out = torch.empty((len(inputs), model.config.hidden_size), device="cuda")
    with torch.inference_mode():
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            width = max(len(inputs[i]) for i in idx)
            ids = torch.zeros((len(idx), width), dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for j, i in enumerate(idx):
                ids[j, :len(inputs[i])] = torch.from_numpy(inputs[i])
                mask[j, :len(inputs[i])] = 1
            ids, mask = ids.cuda(non_blocking=True), mask.cuda(non_blocking=True)
            h = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            m = mask.unsqueeze(-1).float()
            out[torch.from_numpy(idx).cuda()] = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    return out.cpu().numpy()


def reference(folder, inputs: list[np.ndarray], r: dict) -> np.ndarray:
    """Hugging Face fp32 vectors (the reference), and its bf16 SDPA speed into `r`."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa").cuda().eval()
    ref = hf_embed(model, inputs, 256)
    del model
    hf = AutoModel.from_pretrained(folder, dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
    best = min(best_of(lambda b=b: hf_embed(hf, inputs, b))[0] for b in (64, 256, 1024))
    r["hf_bf16_sorted_tok_s"] = round(r["tokens"] / best)
    return ref


def profile(enc, chunk_ids) -> None:
    """Where kb's model-only time goes: GPU time by kernel, against the wall time, to stderr."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    enc.embed_passages(chunk_ids)
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        enc.embed_passages(chunk_ids)
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    rows = [(e.key, e.device_time_total, e.count) for e in prof.key_averages() if e.device_time_total > 0]
    rows.sort(key=lambda r: -r[1])
    print(f"[profile, gemm={enc.packed.gemm}, attention={enc.packed.attention}] wall {wall * 1e3:.1f} ms "
          "under the profiler", file=sys.stderr)
    for key, t, n in rows[:16]:
        print(f"  {t / 1e3:9.1f} ms {n:6d}x  {key[:90]}", file=sys.stderr)


def attention_sweep(enc, chunk_ids, budget: int) -> dict:
    """kb's varlen attention alone on one batch of the real lengths (random q, k, v), each tile
    configuration (block_m, block_n, warps, stages) checked against the default and timed."""
    import torch

    from kb.embed.pipeline import batches
    from kb.kernels.encoder_layers import attention_tiles, varlen_attention

    stream = enc.passage_stream()
    lengths = np.array([stream.tokens(x) for x in chunk_ids])
    middle = batches(lengths, budget)
    lengths = lengths[middle[len(middle) // 2]].tolist()
    heads, width = enc.packed.heads, enc.dims
    qkv = torch.randn((sum(lengths), 3 * width), dtype=torch.float16, device="cuda")
    cu = torch.tensor([0] + np.cumsum(lengths).tolist(), dtype=torch.int32, device="cuda")

    def tiles(bm):
        return tuple(torch.tensor(t, dtype=torch.int32, device="cuda") for t in attention_tiles(lengths, bm))

    ref = varlen_attention(qkv, cu, tiles(64), heads)
    flops = 4 * sum(n * n for n in lengths) * width
    out = {"tokens": sum(lengths), "default": dict(enc.packed.attention)}
    for bm, bn, w, st in ATTENTION_CONFIGS:
        t, name = tiles(bm), f"{bm}x{bn}w{w}s{st}"
        try:
            got = varlen_attention(qkv, cu, t, heads, block_m=bm, block_n=bn, warps=w, stages=st)
        except Exception as e:  # out of shared memory, say
            out[name] = f"failed: {type(e).__name__}"
            continue
        err = (got.float() - ref.float()).abs().max().item()
        ms = best_of(lambda: varlen_attention(qkv, cu, t, heads, block_m=bm, block_n=bn, warps=w, stages=st),
                     20)[0] * 1e3
        out[name] = {"ms": round(ms, 3), "tflops": round(flops / ms / 1e9, 1), "max_err": round(err, 5)}
    return out


def model_only(enc, folder, chunk_ids, ref: np.ndarray, r: dict, args) -> None:
    """kb's encoder on the token ids: correctness by GEMM path, speed by GEMM and batch size."""
    from kb.embed.encoder import EmbedConfig

    tokens, sweep, by_gemm = r["tokens"], {}, {}
    for gemm in (("lt",) if args.skip_sweep else ("torch", "triton", "lt")):
        enc.packed.gemm = gemm
        by_gemm[gemm] = round(float(cosines(ref, enc.embed_passages(chunk_ids)).min()), 6)
        for budget in ((262144,) if args.skip_sweep else (16384, 65536, 262144)):
            enc.cfg = EmbedConfig(model=str(folder), gpu_batch_tokens=budget)
            sweep[f"{gemm}/{budget}"] = round(tokens / best_of(lambda: enc.embed_passages(chunk_ids))[0])
    r["min_cosine_by_gemm"] = by_gemm
    enc.packed.gemm, enc.cfg = "lt", EmbedConfig(model=str(folder), gpu_batch_tokens=args.batch_tokens)
    if args.tune_attention:
        try:
            r["attention_sweep"] = attention_sweep(enc, chunk_ids, args.batch_tokens)
        except Exception as e:  # the rest of the run still counts
            r["attention_sweep"] = f"failed: {e!r}"
    if args.profile:
        profile(enc, chunk_ids)
    r["kb_model_sweep_tok_s"] = sweep
    r["kb_model_tok_s"] = round(tokens / best_of(lambda: enc.embed_passages(chunk_ids))[0])
    r["kb_model_over_hf"] = round(r["kb_model_tok_s"] / r["hf_bf16_sorted_tok_s"], 2)


def feed_batches(enc, chunk_ids, ref: np.ndarray, r: dict) -> None:
    """Batches of the GPU feed's size, each one launch of a CUDA graph, or launched kernel by kernel."""
    from kb.embed.pipeline import batches, embed_packed

    size = enc.cfg.feed_batch_tokens
    for label, graph_tokens in (("eager", None), ("graphs", size)):
        stream = enc._stream(enc._passage, graph_tokens)
        r[f"kb_model_feed_{label}_tok_s"] = round(
            r["tokens"] / best_of(lambda: embed_packed(stream, chunk_ids, size))[0])
        if graph_tokens:
            stream.replays = 0
            r["min_cosine_graphs"] = round(float(cosines(ref, embed_packed(stream, chunk_ids, size)).min()), 6)
            n = len(batches(np.array([stream.tokens(x) for x in chunk_ids]), size))
            r["graph_replays_of_batches"] = [stream.replays, n]


def two_gpus(enc, chunk_ids, ref: np.ndarray, r: dict) -> None:
    """One process per GPU (kb index --devices 0,1), where there are two."""
    import torch

    if torch.cuda.device_count() < 2:
        return
    from kb.embed.multi import MultiEncoder

    multi = MultiEncoder(enc.cfg, ["cuda:0", "cuda:1"])
    r["min_cosine_2gpu"] = round(float(cosines(ref, multi.embed_passages(chunk_ids)).min()), 6)
    r["kb_model_2gpu_tok_s"] = round(r["tokens"] / best_of(lambda: multi.embed_passages(chunk_ids))[0])
    r["two_gpus_over_one"] = round(r["kb_model_2gpu_tok_s"] / r["kb_model_tok_s"], 2)
    multi.close()


def bge_base(folder: Path, tokenizer_dir: Path) -> Path:
    """A bge-base-shaped BERT with random weights, saved as an ordinary model folder."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                     intermediate_size=3072, max_position_embeddings=512)
    BertModel(cfg).half().save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, folder / name)
    return folder


def index_runs(files: Path, db: Path, cfg, runs: int) -> tuple[list[float], object]:
    """Wall times of `runs` `kb index` runs of `files`, each into a fresh store; the last report."""
    from kb.index.indexer import index_paths

    times, report = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        report = index_paths([files], db, cfg)
        times.append(time.perf_counter() - t0)
        shutil.rmtree(db)
    return times, report


def end_to_end_two_gpus(name: str, files: Path, work: Path, cfg, one: Path, r: dict) -> None:
    """`kb index --devices 0,1` where there are two GPUs: best of two warm runs, its ratio to one
    GPU, and its stored vectors against the one-GPU store's (`one`), chunk by chunk."""
    import sqlite3

    import torch

    from kb.index.indexer import index_paths

    if torch.cuda.device_count() < 2:
        return
    two = replace(cfg, embed=replace(cfg.embed, devices=(0, 1)))
    times = index_runs(files, work / f"store-{name}-2gpu", two, 3)[0]  # the first also starts the processes
    r["kb_end_to_end_2gpu_runs_s"] = [round(t, 3) for t in times]
    r["kb_end_to_end_2gpu_tok_s"] = round(r["tokens"] / min(times[1:]))
    r["kb_end_to_end_2gpu_over_one"] = round(r["kb_end_to_end_2gpu_tok_s"] / r["kb_end_to_end_tok_s"], 2)
    db = work / f"store-{name}-2gpu-check"
    index_paths([files], db, two)
    vectors = []
    for store in (one, db):
        conn = sqlite3.connect(store / "kb.sqlite")
        vectors.append(dict(conn.execute("SELECT hash, vector FROM embeddings")))
        conn.close()
    common = sorted(vectors[0].keys() & vectors[1].keys())
    a, b = (np.frombuffer(b"".join(v[h] for h in common), np.float32).reshape(len(common), -1) for v in vectors)
    r["kb_2gpu_vs_1gpu_stored"] = {"chunks": len(common), "of": len(vectors[0]),
                                   "min_cosine": round(float(cosines(a, b).min()), 6)}
    shutil.rmtree(db)
