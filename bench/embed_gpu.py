"""GPU embedding: kb's packed encoder and pipeline against what a user would run instead, in one run.

Corpus: real text, the Python sources of the running interpreter's standard library and
site-packages, chunked by kb's chunker until `--chunks` chunks (the same files are what `kb index`
reads end to end). For all-MiniLM-L6-v2 (real weights, `--model DIR`, its fp16 copy is enough) and
a bge-base shape (BERT, 768 wide, 12 layers, random weights):

- correctness: kb's vectors against Hugging Face fp32 (same weights) on every chunk, min cosine;
- sentence-transformers `encode` on the chunk texts: default settings (fp32), and fp16;
- Hugging Face bf16 SDPA, length-sorted batches (model only: token ids in, vectors out);
- kb model only: `Encoder.embed_passages` on the same token ids (packed, Triton kernels);
- kb end to end: `kb index` of the files, text to vectors stored in SQLite (BM25 too), with the
  seconds of each of its phases as the indexer reports them (kb.index.phases.PhaseEvent);
- the fast tokenizer alone on the chunk texts (all cores).

    python bench/embed_gpu.py --model DIR [--chunks 20000] [--shapes minilm,bge-base]

Prints a table last, then one JSON line.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import sysconfig
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from common import best_of, emit
from embed_model import (bge_base, cosines, end_to_end_two_gpus, feed_batches, index_runs, model_only, reference,
                         two_gpus)

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


def phases(files: Path, db: Path, cfg) -> dict:
    """Seconds and counts of each phase of one `kb index` run, from the indexer's events."""
    from kb.index.indexer import index_paths

    events = []
    t0 = time.perf_counter()
    index_paths([files], db, cfg, events=events.append)
    out = {"total": round(time.perf_counter() - t0, 3)}
    out.update({e.phase: {"s": e.seconds, **e.counts} for e in events})
    return out


def read_jobs(files: Path) -> list:
    from kb.index.readpool import ReadJob

    return [ReadJob(str(p), str(files), "code", p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(files.rglob("*.py"))]


def read_alone(cfg, jobs: list, workers: int = 0) -> dict:
    """Reading only (worker processes extract, tokenise, chunk and analyse; nothing is written)."""
    from kb.index.indexer import IndexConfig
    from kb.index.readpool import Reader

    reader = Reader(cfg, workers, nice=IndexConfig().worker_nice)
    t0, first, tokens = time.perf_counter(), None, 0
    for res in reader.results(jobs):
        first = first or time.perf_counter() - t0
        tokens += sum(len(c.token_ids) for c in res.doc.chunks) if res.doc else 0
    seconds = time.perf_counter() - t0
    reader.close()
    return {"s": round(seconds, 3), "first_result_s": round(first, 3), "tok_s": round(tokens / seconds)}


def reading_scaling(files: Path, folder: Path) -> dict:
    """Reading alone (nothing written) with 4 to all workers, and one process's time split between
    the tokenizer and the rest: is reading bound by the cores, or by how it is spread over them?"""
    from kb.embed.tokenizer import Tokenizer
    from kb.index.chunker import ChunkConfig
    from kb.index.readpool import ReadConfig, read_document

    jobs = read_jobs(files)
    cfg = ReadConfig(20.0, ChunkConfig(), str(folder))
    out: dict = {"files": len(jobs)}
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


def variants(files: Path, work: Path, cfg) -> dict:
    """End to end (best of two) with other settings: readers at the writer's priority, one or two
    cores left to the writing process (`--phases`); other numbers of batches in flight in the GPU
    feed (`--feed-variants`); the feed launching kernel by kernel (always)."""
    cpus, out = os.cpu_count() or 1, {}
    for workers, nice in ((cpus, 0), (cpus, cfg.worker_nice), (cpus - 1, cfg.worker_nice),
                          (cpus - 2, cfg.worker_nice)):
        if workers >= 2:
            times, _ = index_runs(files, work / "store-variant", replace(cfg, workers=workers, worker_nice=nice), 2)
            out[f"workers_{workers}_nice_{nice}"] = round(min(times), 3)
    return out


def feed_variants(files: Path, work: Path, cfg) -> dict:
    """End to end (best of two) with other numbers of batches in flight in the GPU feed."""
    out = {}
    for depth in (2, 4, 8):
        times, _ = index_runs(files, work / "store-feed", replace(cfg, embed=replace(cfg.embed, feed_depth=depth)), 2)
        out[f"depth_{depth}"] = round(min(times), 3)
    return out


def baselines(folder: Path, texts: list[str], enc, r: dict) -> None:
    """The fast tokenizer alone, and sentence-transformers fp32 and fp16, on the chunk texts."""
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    r["tokenizer_tok_s"] = round(r["tokens"] / best_of(lambda: tok.encode_batch(texts), 2)[0])
    st = SentenceTransformer(str(folder), device="cuda")
    st.max_seq_length = enc.max_tokens
    r["st_default_tok_s"] = round(r["tokens"] / best_of(lambda: st.encode(texts), 1, lambda: st.encode(texts[:2000]))[0])
    st.half()
    r["st_fp16_tok_s"] = round(r["tokens"] / best_of(lambda: st.encode(texts), 1, lambda: st.encode(texts[:2000]))[0])


def end_to_end(name: str, folder: Path, texts, ref, files: Path, work: Path, args, r: dict) -> None:
    """`kb index` of the files: best of three warm runs, reading alone, BM25 only, the feed
    eager, each phase's seconds, the stored vectors against the reference."""
    from kb.embed.encoder import EmbedConfig
    from kb.index.chunker import ChunkConfig
    from kb.index.indexer import IndexConfig
    from kb.index.readpool import ReadConfig

    cfg = IndexConfig(vector_index="flat", embed=EmbedConfig(model=str(folder), gpu_batch_tokens=args.batch_tokens))
    times, report = index_runs(files, work / f"store-{name}", cfg, 4)  # the first also loads the model
    r["kb_end_to_end_runs_s"] = [round(t, 3) for t in times]
    best = min(times[1:])
    r["kb_read_only_s"] = round(read_alone(ReadConfig(20.0, ChunkConfig(), str(folder)), read_jobs(files))["s"], 2)
    bm25_only = IndexConfig(vector_index="none", embed=cfg.embed)
    r["kb_index_bm25_only_s"] = round(index_runs(files, work / f"store-{name}-bm25", bm25_only, 1)[0][0], 2)
    r["kb_end_to_end_s"] = round(best, 2)
    r["kb_end_to_end_embedded"] = report.embedded
    r["kb_end_to_end_tok_s"] = round(r["tokens"] / best)
    r["kb_end_to_end_over_st"] = round(r["kb_end_to_end_tok_s"] / r["st_default_tok_s"], 2)
    eager = replace(cfg, embed=replace(cfg.embed, feed_graphs=False))
    r["kb_end_to_end_eager_feed_runs_s"] = [round(t, 3) for t in index_runs(files, work / f"store-{name}-eager", eager, 2)[0]]
    db = work / f"store-{name}-phases"
    r["kb_end_to_end_phases"] = phases(files, db, cfg)
    r["kb_end_to_end_stored_cosine_fp32"] = stored_cosine(db, texts, ref)
    end_to_end_two_gpus(name, files, work, cfg, db, r)
    shutil.rmtree(db)
    if args.feed_variants:
        r["kb_end_to_end_feed_variants_s"] = feed_variants(files, work, cfg)
    if args.phases:
        r["reading"] = reading_scaling(files, folder)
        r["kb_end_to_end_variants_s"] = variants(files, work, cfg)


def run_shape(name: str, folder: Path, texts, chunk_ids, files: Path, work: Path, args) -> dict:
    import torch

    from kb.embed.encoder import EmbedConfig, Encoder

    enc = Encoder(EmbedConfig(model=str(folder), gpu_batch_tokens=args.batch_tokens))
    inputs = [enc._inputs(x, enc._passage) for x in chunk_ids]
    r: dict = {"shape": name, "chunks": len(texts), "tokens": int(sum(map(len, inputs)))}
    r["mean_tokens"] = round(r["tokens"] / len(inputs), 1)
    ref = reference(folder, inputs, r)
    cos = cosines(ref, enc.embed_passages(chunk_ids))
    r["min_cosine_fp32"], r["mean_cosine_fp32"] = round(float(cos.min()), 6), round(float(cos.mean()), 6)
    model_only(enc, folder, chunk_ids, ref, r, args)
    feed_batches(enc, chunk_ids, ref, r)
    two_gpus(enc, chunk_ids, ref, r)
    if not args.only_model:
        baselines(folder, texts, enc, r)
        end_to_end(name, folder, texts, ref, files, work, args, r)
    torch.cuda.empty_cache()
    return r


def table(results: list[dict]) -> None:
    import torch

    print(f"\n{torch.cuda.get_device_name()}, {results[0]['chunks']} chunks of real text (Python sources); tokens/s")
    cols = ("st_default_tok_s", "st_fp16_tok_s", "hf_bf16_sorted_tok_s", "kb_model_tok_s", "kb_end_to_end_tok_s",
            "tokenizer_tok_s", "kb_model_over_hf", "kb_end_to_end_over_st", "min_cosine_fp32",
            "kb_model_feed_eager_tok_s", "kb_model_feed_graphs_tok_s")
    if "two_gpus_over_one" in results[0]:
        cols += ("kb_model_2gpu_tok_s", "two_gpus_over_one", "kb_end_to_end_2gpu_tok_s", "kb_end_to_end_2gpu_over_one")
    print(f"{'':10}" + "".join(f"{c.replace('_tok_s', ''):>22}" for c in cols))
    for r in results:
        print(f"{r['shape']:10}" + "".join(f"{r.get(c, '-'):>22}" for c in cols))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="all-MiniLM-L6-v2 folder (an fp16 copy is enough)")
    ap.add_argument("--chunks", type=int, default=20000)
    ap.add_argument("--shapes", default="minilm,bge-base")
    ap.add_argument("--batch-tokens", type=int, default=262144)
    ap.add_argument("--profile", action="store_true", help="GPU kernel times of the model alone, to stderr")
    ap.add_argument("--phases", action="store_true", help="reading alone with 4 to all workers, one process's "
                    "tokenizer share, end to end with other reader settings (JSON: reading, kb_end_to_end_variants_s)")
    ap.add_argument("--feed-variants", action="store_true", help="end to end with other numbers of batches in flight in the GPU feed")
    ap.add_argument("--tune-attention", action="store_true", help="time the attention kernel's tile configurations alone")
    ap.add_argument("--only-model", action="store_true", help="stop after the model-only measurements")
    ap.add_argument("--skip-sweep", action="store_true", help="only the default GEMM and batch size")
    args = ap.parse_args()
    from kb.embed.tokenizer import Tokenizer

    work = Path(tempfile.mkdtemp(prefix="kb-embed-gpu-"))
    minilm = Path(args.model)
    texts, ids, files = corpus(args.chunks, Tokenizer(minilm, minilm.name), work)
    results = []
    for shape in args.shapes.split(","):
        folder = minilm if shape == "minilm" else bge_base(work / "bge-base", minilm)
        t0 = time.perf_counter()
        results.append(run_shape(shape, folder, texts, ids, files, work, args))
        print(results[-1], f"[{time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)
    shutil.rmtree(work, ignore_errors=True)
    table(results)
    emit("embed_gpu", results=results)


if __name__ == "__main__":
    main()
