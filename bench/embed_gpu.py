"""GPU embedding: kb's packed encoder and pipeline against what a user would run instead, in one run.

Corpus: real text, the Python sources of the running interpreter's standard library and
site-packages, chunked by kb's chunker until `--chunks` chunks (the same files are what `kb index`
reads end to end). For all-MiniLM-L6-v2 (real weights, `--model DIR`, its fp16 copy is enough) and
a bge-base shape (BERT, 768 wide, 12 layers, random weights):

- correctness: kb's vectors against Hugging Face fp32 (same weights) on every chunk, min cosine;
- sentence-transformers `encode` on the chunk texts: default settings (fp32), and fp16;
- Hugging Face bf16 SDPA, length-sorted batches (model only: token ids in, vectors out);
- kb model only: `Encoder.embed_passages` on the same token ids (packed, Triton kernels);
- kb end to end: `kb index` of the files, text to vectors stored in SQLite (BM25 too);
- the fast tokenizer alone on the chunk texts (all cores).

    python bench/embed_gpu.py --model DIR [--chunks 20000] [--shapes minilm,bge-base]

Prints a table last, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import sysconfig
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def corpus(n_chunks: int, tokenizer, work: Path):
    """(chunk texts, chunk token ids, folder of the source files they come from)."""
    from kb.index.chunker import ChunkConfig, chunk_text

    folder = work / "corpus"
    texts, ids = [], []
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    for r, root in enumerate(roots):
        for path in sorted(root.rglob("*.py")):
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if CJK.search(text):  # keeps jieba (19 MB, for CJK text) off the GPU machine
                continue
            chunks = chunk_text(text, "code", tokenizer, ChunkConfig())
            if not chunks:
                continue
            dest = folder / str(r) / path.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text, encoding="utf-8")
            texts += [c.text for c in chunks]
            ids += [c.token_ids for c in chunks]
            if len(texts) >= n_chunks:
                return texts, ids, folder
    return texts, ids, folder


def timed(fn, reps: int = 3, warm=None) -> tuple[float, object]:
    """Best wall time of `reps` runs after one warm-up (`warm`, else `fn`), with the GPU drained each time."""
    import torch

    out = (warm or fn)()
    best = float("inf")
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


def cosines(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """The cosine between each row of `ref` and the same row of `got`."""
    return (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))


def stored_cosine(db: Path, texts: list[str], ref: np.ndarray) -> dict:
    """The vectors a `kb index` run stored in SQLite against the reference of the same chunk text."""
    import sqlite3

    row_of = {t: i for i, t in enumerate(texts)}
    conn = sqlite3.connect(db / "kb.sqlite")
    rows = conn.execute("SELECT c.text, e.vector FROM chunks c JOIN embeddings e ON e.hash = c.hash").fetchall()
    conn.close()
    found = [(row_of[t], v) for t, v in rows if t in row_of]
    got = np.frombuffer(b"".join(v for _, v in found), np.float32).reshape(len(found), ref.shape[1])
    cos = cosines(ref[[i for i, _ in found]], got)
    return {"chunks": len(rows), "matched": len(found), "min": round(float(cos.min()), 6)}


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


def read_jobs(files: Path) -> list:
    from kb.index.reading import ReadJob

    return [ReadJob(str(p), str(files), "code", p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(files.rglob("*.py"))]


def read_alone(cfg, jobs: list, workers: int = 0) -> dict:
    """Reading only (worker processes extract, tokenise, chunk and analyse; nothing is written)."""
    from kb.index.reading import Reader

    reader = Reader(cfg, workers)
    t0, first, tokens = time.perf_counter(), None, 0
    for res in reader.results(jobs):
        first = first or time.perf_counter() - t0
        tokens += sum(len(c.token_ids) for c in res.doc.chunks) if res.doc else 0
    seconds = time.perf_counter() - t0
    reader.close()
    return {"s": round(seconds, 3), "first_result_s": round(first, 3), "tok_s": round(tokens / seconds)}


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
    print(f"[profile, gemm={enc.packed.gemm}, attention={enc.packed.attention}] wall {wall * 1e3:.1f} ms under the profiler", file=sys.stderr)
    for key, t, n in rows[:16]:
        print(f"  {t / 1e3:9.1f} ms {n:6d}x  {key[:90]}", file=sys.stderr)


ATTENTION_CONFIGS = [(64, 64, 4, 2), (64, 64, 4, 3), (64, 32, 4, 2), (64, 128, 4, 2), (128, 32, 4, 2),
                     (128, 32, 8, 2), (128, 64, 4, 2), (128, 64, 8, 2), (128, 64, 8, 3), (128, 128, 8, 2),
                     (32, 64, 2, 2), (32, 32, 2, 2)]


def attention_sweep(enc, chunk_ids, budget: int) -> dict:
    """kb's varlen attention alone on one batch of the real lengths (random q, k, v), each tile
    configuration (block_m, block_n, warps, stages) checked against the default and timed."""
    import torch

    from kb.embed.pipeline import batches
    from kb.kernels.encoder import attention_tiles, varlen_attention

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
        t = tiles(bm)
        try:
            got = varlen_attention(qkv, cu, t, heads, block_m=bm, block_n=bn, warps=w, stages=st)
        except Exception as e:  # out of shared memory, say
            out[f"{bm}x{bn}w{w}s{st}"] = f"failed: {type(e).__name__}"
            continue
        err = (got.float() - ref.float()).abs().max().item()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(20):
            varlen_attention(qkv, cu, t, heads, block_m=bm, block_n=bn, warps=w, stages=st)
        end.record()
        end.synchronize()
        ms = start.elapsed_time(end) / 20
        out[f"{bm}x{bn}w{w}s{st}"] = {"ms": round(ms, 3), "tflops": round(flops / ms / 1e9, 1), "max_err": round(err, 5)}
    return out


def timeline(run_index) -> dict:
    """Seconds spent in each phase of one `kb index` run (and, in the GPU feed's thread, in
    loading the encoder and embedding), by wrapping the indexer's methods for that run."""
    from kb.embed import encoder as encoder_module
    from kb.embed.pipeline import PackedStream
    from kb.index import indexer
    from kb.index.bm25 import Bm25Cache
    from kb.index.reading import Reader
    from kb.index.store import Store

    spent: dict[str, float] = {}

    def timed_call(name, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] = round(spent.get(name, 0.0) + time.perf_counter() - t0, 3)
        return wrapper

    from kb.index import embeddings, vectors

    # _read: the main thread waiting for the readers; write_document: its own work per file
    patches = [(indexer._Run, n, getattr(indexer._Run, n)) for n in
               ("_index_target", "_take_vectors", "_embed", "_derive", "_prune_kv", "_write_vectors", "_check_fingerprint",
                "_read")]
    patches += [(indexer, "write_document", indexer.write_document)]
    patches += [(Bm25Cache, n, Bm25Cache.__dict__[n]) for n in ("current", "build", "save")]
    patches += [(embeddings, n, getattr(embeddings, n)) for n in ("missing", "collect_garbage", "listing",
                                                                  "vectors", "matrix")]
    patches += [(vectors, n, getattr(vectors, n)) for n in ("current", "save")]
    patches += [(encoder_module.Encoder, "embed_passages", encoder_module.Encoder.embed_passages)]
    # the GPU feed's thread: packing and launching a batch, and waiting for one's vectors
    patches += [(PackedStream, n, getattr(PackedStream, n)) for n in ("submit", "_collect")]
    patches += [(Store, n, Store.__dict__[n]) for n in ("open", "close")]
    patches += [(Reader, "close", Reader.close), (indexer._Run, "__init__", indexer._Run.__init__)]
    read = indexer._Run._read

    def last_read(*a, **k):  # when the last file's reading came back, from the run's start
        out = read(*a, **k)
        spent.setdefault("first_read_at", round(time.perf_counter() - t0, 3))
        spent["last_read_at"] = round(time.perf_counter() - t0, 3)
        return out

    streams, init = [], PackedStream.__init__

    def stream_init(self, *a, **k):  # the feed's streams, for how many batches ran as a graph
        init(self, *a, **k)
        streams.append(self)

    patches += [(PackedStream, "__init__", init)]
    for owner, name, fn in patches:
        label = f"{owner.__name__.rsplit('.', 1)[-1]}.{name}"
        if fn is init:
            setattr(owner, name, stream_init)
            continue
        fn = last_read if fn is read else fn
        if isinstance(fn, classmethod):
            setattr(owner, name, classmethod(timed_call(label, fn.__func__)))
        else:
            setattr(owner, name, timed_call(label, fn))
    try:
        t0 = time.perf_counter()
        run_index()
        spent["total"] = round(time.perf_counter() - t0, 3)
        spent["graph_replays"] = sum(s.replays for s in streams)
    finally:
        for owner, name, fn in patches:
            setattr(owner, name, fn)
    return spent


def reading_scaling(files: Path, folder: Path) -> dict:
    """Reading alone (nothing written) with 1 to all workers, and one process's time split between
    the tokenizer and the rest: is reading bound by the cores, or by how it is spread over them?"""
    import os

    from kb.embed.tokenizer import Tokenizer
    from kb.index.chunker import ChunkConfig
    from kb.index.reading import ReadConfig, read_document

    jobs = read_jobs(files)
    cfg = ReadConfig(20.0, ChunkConfig(), str(folder))
    out: dict = {"cpus": os.cpu_count(), "files": len(jobs)}
    try:
        out["cpu_model"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                                if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    few = jobs[::8]  # one process: an eighth of the files
    read_document(few[0], cfg)
    t0 = time.perf_counter()
    tokens = sum(len(c.token_ids) for j in few for c in read_document(j, cfg).doc.chunks)
    out["one_process_tok_s"] = round(tokens / (time.perf_counter() - t0))
    tok, texts = Tokenizer(folder, folder.name), [Path(j.path).read_text() for j in few]
    t0 = time.perf_counter()
    for t in texts:
        tok._tok.encode(t, add_special_tokens=False)
    out["one_process_tokenizer_share"] = round((time.perf_counter() - t0) / (tokens / out["one_process_tok_s"]), 3)
    for workers in sorted({4, 8, os.cpu_count() or 1}):
        out[f"workers_{workers}"] = read_alone(cfg, jobs, workers)
    return out


@contextmanager
def setting(module, name: str, value):
    """A module's tunable (reading.WORKER_NICE, gpu_feed.FEED_DEPTH, ...) set to `value` for a while."""
    default = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, default)


def variants(files: Path, work: Path, cfg) -> dict:
    """End to end (best of two) with other reader settings: readers at the writer's priority, and
    one or two cores left to the writing process."""
    import os
    from dataclasses import replace

    from kb.index import reading

    default, cpus, out = reading.WORKER_NICE, os.cpu_count() or 1, {}
    for workers, nice in ((cpus, 0), (cpus, default), (cpus - 1, default), (cpus - 2, default)):
        if workers < 2:
            continue
        with setting(reading, "WORKER_NICE", nice):
            times, _ = index_runs(files, work / "store-variant", replace(cfg, workers=workers), 2)
        out[f"workers_{workers}_nice_{nice}"] = round(min(times), 3)
    return out


def feed_variants(files: Path, work: Path, cfg) -> dict:
    """End to end (best of two) with other numbers of batches in flight in the GPU feed."""
    from kb.index import gpu_feed

    out = {}
    for depth in (2, 4, 8):
        with setting(gpu_feed, "FEED_DEPTH", depth):
            times, _ = index_runs(files, work / "store-feed", cfg, 2)
        out[f"depth_{depth}"] = round(min(times), 3)
    return out


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


def run_shape(name: str, folder: Path, texts, chunk_ids, files: Path, work: Path, args) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    from kb.embed.encoder import EmbedConfig, Encoder
    from kb.index.indexer import IndexConfig, index_paths

    r: dict = {"shape": name, "chunks": len(texts)}
    enc = Encoder(EmbedConfig(model=str(folder), gpu_batch_tokens=args.batch_tokens))
    inputs = [enc._inputs(x, enc._passage) for x in chunk_ids]
    tokens = int(sum(map(len, inputs)))
    r["tokens"] = tokens
    r["mean_tokens"] = round(tokens / len(inputs), 1)

    ref_model = AutoModel.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa").cuda().eval()
    ref = hf_embed(ref_model, inputs, 256)
    del ref_model
    got = enc.embed_passages(chunk_ids)
    cos = cosines(ref, got)
    r["min_cosine_fp32"] = round(float(cos.min()), 6)
    r["mean_cosine_fp32"] = round(float(cos.mean()), 6)

    hf = AutoModel.from_pretrained(folder, dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
    best_hf = min(timed(lambda b=b: hf_embed(hf, inputs, b))[0] for b in (64, 256, 1024))
    r["hf_bf16_sorted_tok_s"] = round(tokens / best_hf)
    del hf

    sweep, by_gemm = {}, {}
    for gemm in (("lt",) if args.skip_sweep else ("torch", "triton", "lt")):
        enc.packed.gemm = gemm
        v = enc.embed_passages(chunk_ids)
        by_gemm[gemm] = round(float(cosines(ref, v).min()), 6)
        for budget in ((262144,) if args.skip_sweep else (16384, 65536, 262144)):
            enc.cfg = EmbedConfig(model=str(folder), gpu_batch_tokens=budget)
            sweep[f"{gemm}/{budget}"] = round(tokens / timed(lambda: enc.embed_passages(chunk_ids))[0])
    r["min_cosine_by_gemm"] = by_gemm
    enc.packed.gemm, enc.cfg = "lt", EmbedConfig(model=str(folder), gpu_batch_tokens=args.batch_tokens)
    if args.tune_attention:
        try:
            r["attention_sweep"] = attention_sweep(enc, chunk_ids, args.batch_tokens)
        except Exception as e:  # the rest of the run still counts
            r["attention_sweep"] = f"failed: {e!r}"
        print(json.dumps(r["attention_sweep"]), file=sys.stderr, flush=True)
    if args.profile:
        profile(enc, chunk_ids)
    r["kb_model_sweep_tok_s"] = sweep
    r["kb_model_tok_s"] = round(tokens / timed(lambda: enc.embed_passages(chunk_ids))[0])
    r["kb_model_over_hf"] = round(r["kb_model_tok_s"] / r["hf_bf16_sorted_tok_s"], 2)
    # batches of the GPU feed's size, each one launch of a CUDA graph, or launched kernel by kernel
    from kb.embed.pipeline import batches, embed_packed
    from kb.index.gpu_feed import FEED_TOKENS

    for label, graph_tokens in (("eager", None), ("graphs", FEED_TOKENS)):
        stream = enc._stream(enc._passage, graph_tokens)
        r[f"kb_model_feed_{label}_tok_s"] = round(tokens / timed(lambda: embed_packed(stream, chunk_ids, FEED_TOKENS))[0])
        if graph_tokens:
            stream.replays = 0
            v = embed_packed(stream, chunk_ids, FEED_TOKENS)
            r["min_cosine_graphs"] = round(float(cosines(ref, v).min()), 6)
            n = len(batches(np.array([stream.tokens(x) for x in chunk_ids]), FEED_TOKENS))
            r["graph_replays_of_batches"] = [stream.replays, n]
        del stream
    if torch.cuda.device_count() >= 2:  # one process per GPU (kb index --devices 0,1)
        from kb.embed.multi import MultiEncoder

        multi = MultiEncoder(enc.cfg, ["cuda:0", "cuda:1"])
        v = multi.embed_passages(chunk_ids)
        r["min_cosine_2gpu"] = round(float(cosines(ref, v).min()), 6)
        r["kb_model_2gpu_tok_s"] = round(tokens / timed(lambda: multi.embed_passages(chunk_ids))[0])
        r["two_gpus_over_one"] = round(r["kb_model_2gpu_tok_s"] / r["kb_model_tok_s"], 2)
        multi.close()

    if args.only_model:
        return r
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    r["tokenizer_tok_s"] = round(tokens / timed(lambda: tok.encode_batch(texts), reps=2)[0])

    st = SentenceTransformer(str(folder), device="cuda")
    st.max_seq_length = enc.max_tokens
    r["st_default_tok_s"] = round(tokens / timed(lambda: st.encode(texts), 1, lambda: st.encode(texts[:2000]))[0])
    st.half()
    r["st_fp16_tok_s"] = round(tokens / timed(lambda: st.encode(texts), 1, lambda: st.encode(texts[:2000]))[0])
    del st

    cfg = IndexConfig(vector_index="flat", embed=EmbedConfig(model=str(folder), gpu_batch_tokens=args.batch_tokens))
    # The first run also loads the model; then three fresh stores, warm: the best of those counts.
    times, report = index_runs(files, work / f"store-{name}", cfg, 4)
    r["kb_end_to_end_runs_s"] = [round(t, 3) for t in times]
    best = min(times[1:])
    from kb.index.chunker import ChunkConfig
    from kb.index.reading import ReadConfig

    r["kb_read_only_s"] = round(read_alone(ReadConfig(20.0, ChunkConfig(), str(folder)), read_jobs(files))["s"], 2)
    bm25_only = IndexConfig(vector_index="none", embed=cfg.embed)
    r["kb_index_bm25_only_s"] = round(index_runs(files, work / f"store-{name}-bm25", bm25_only, 1)[0][0], 2)
    r["kb_end_to_end_s"] = round(best, 2)
    r["kb_end_to_end_embedded"] = report.embedded
    r["kb_end_to_end_tok_s"] = round(tokens / best)
    r["kb_end_to_end_over_st"] = round(r["kb_end_to_end_tok_s"] / r["st_default_tok_s"], 2)
    from kb.index import gpu_feed

    with setting(gpu_feed, "GRAPHS", False):  # the feed launching kernel by kernel
        r["kb_end_to_end_eager_feed_runs_s"] = [round(t, 3) for t in index_runs(files, work / f"store-{name}-eager", cfg, 2)[0]]
    db = work / f"store-{name}-timeline"
    r["kb_end_to_end_phases_s"] = timeline(lambda: index_paths([files], db, cfg))
    r["kb_end_to_end_stored_cosine_fp32"] = stored_cosine(db, texts, ref)
    shutil.rmtree(db)
    if args.feed_variants:
        r["kb_end_to_end_feed_variants_s"] = feed_variants(files, work, cfg)
    if args.phases:
        r["reading"] = reading_scaling(files, folder)
        r["kb_end_to_end_variants_s"] = variants(files, work, cfg)
    if args.profile:  # where the end-to-end run's threads spend their time
        import cProfile
        import pstats

        db = work / f"store-{name}-profile"
        prof = cProfile.Profile()
        prof.enable()
        index_paths([files], db, cfg)
        prof.disable()
        shutil.rmtree(db)
        print(f"[end to end, main thread, {name}]", file=sys.stderr)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(14)
    torch.cuda.empty_cache()
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="all-MiniLM-L6-v2 folder (an fp16 copy is enough)")
    ap.add_argument("--chunks", type=int, default=20000)
    ap.add_argument("--shapes", default="minilm,bge-base")
    ap.add_argument("--batch-tokens", type=int, default=262144)
    ap.add_argument("--profile", action="store_true", help="GPU kernel times and the end-to-end main thread, to stderr")
    ap.add_argument("--phases", action="store_true", help="reading alone with 4 to all workers, one process's tokenizer share, "
                    "end to end with other reader settings (JSON: reading, kb_end_to_end_variants_s)")
    ap.add_argument("--feed-variants", action="store_true", help="end to end with other numbers of batches in flight in the GPU feed")
    ap.add_argument("--tune-attention", action="store_true", help="time the attention kernel's tile configurations alone")
    ap.add_argument("--only-model", action="store_true", help="stop after the model-only measurements")
    ap.add_argument("--skip-sweep", action="store_true", help="only the default GEMM and batch size")
    args = ap.parse_args()
    import torch

    from kb.embed.tokenizer import Tokenizer

    work = Path(tempfile.mkdtemp(prefix="kb-embed-gpu-"))
    minilm = Path(args.model)
    texts, ids, files = corpus(args.chunks, Tokenizer(minilm, minilm.name), work)
    results = []
    for shape in args.shapes.split(","):
        folder = minilm if shape == "minilm" else bge_base(work / "bge-base", minilm)
        t0 = time.perf_counter()
        results.append(run_shape(shape, folder, texts, ids, files, work, args))
        print(json.dumps(results[-1]), f"[{time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)
    shutil.rmtree(work, ignore_errors=True)
    print(f"\n{torch.cuda.get_device_name()}, {len(texts)} chunks of real text (Python sources); tokens/s")
    cols = ("st_default_tok_s", "st_fp16_tok_s", "hf_bf16_sorted_tok_s", "kb_model_tok_s", "kb_end_to_end_tok_s",
            "tokenizer_tok_s", "kb_model_over_hf", "kb_end_to_end_over_st", "min_cosine_fp32",
            "kb_model_feed_eager_tok_s", "kb_model_feed_graphs_tok_s")
    if "two_gpus_over_one" in results[0]:
        cols += ("kb_model_2gpu_tok_s", "two_gpus_over_one")
    print(f"{'':10}" + "".join(f"{c.replace('_tok_s', ''):>22}" for c in cols))
    for r in results:
        print(f"{r['shape']:10}" + "".join(f"{r.get(c, '-'):>22}" for c in cols))
    print(json.dumps({"bench": "embed_gpu", "device": torch.cuda.get_device_name(), "results": results}))


if __name__ == "__main__":
    main()
