"""One device call that checks the GPU paths against their baselines: kb's flat index through torch
against its numpy path, then kb's generator against Hugging Face on random Qwen2.5-0.5B-shaped
weights (greedy tokens in a batch and one by one, last-position logits, batch-1 decode speed), with
torch and with Triton attention, fp32 logits after a cached prefix, and decoding with steps queued
ahead against without. Prints each result, then
one JSON line.

    python bench/gpu_check.py     # needs a CUDA GPU
"""

from __future__ import annotations

import json
import tempfile
import time

import torch
from common import emit, timed

QWEN_05B = dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", vocab_size=151936, hidden_size=896,
                intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                torch_dtype="bfloat16", eos_token_id=151645, bos_token_id=151643)


def random_ids(g: torch.Generator, *lengths: int) -> list[list[int]]:
    return [torch.randint(0, 150000, (n,), generator=g).tolist() for n in lengths]


def random_model_folder():
    """A folder of random bf16 weights with a placeholder tokenizer (the engine decodes text with
    one); returns (folder, the HF model on the GPU)."""
    from tokenizers import Tokenizer, models
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    folder = tempfile.mkdtemp()
    with open(f"{folder}/config.json", "w") as f:
        json.dump(QWEN_05B, f)
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=torch.bfloat16)
    hf.save_pretrained(folder)
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")))
    tok.save_pretrained(folder)
    return folder, hf.cuda().eval()


def engine(folder: str, attention: str, **kw):
    from kb.rag.engine import Engine, EngineConfig
    from kb.rag.kv_cache import CacheConfig

    return Engine(EngineConfig(model=folder, attention=attention, cache=CacheConfig(num_blocks=kw.pop("blocks", 4096)),
                               **kw))


def forward(eng, ids: list[int], cached: int, blocks: list[int]) -> torch.Tensor:
    """Hidden states of `ids[cached:]` through the engine's runner, `ids[:cached]` already in `blocks`."""
    from kb.rag.batch import Batch

    batch = Batch.build([len(ids) - cached], [len(ids)], [blocks], eng.pool.block_size, eng.runner.device,
                        ids[cached:])
    with torch.inference_mode():
        return eng.runner.forward(batch)


def hf_greedy(hf, prompts: list[list[int]], new: int = 16) -> list[list[int]]:
    with torch.inference_mode():
        return [hf.generate(torch.tensor([p]).cuda(), max_new_tokens=new, do_sample=False)[0, len(p):].tolist()
                for p in prompts]


def fp32_logits(folder: str) -> dict:
    """The same random weights in fp32: kb (torch and Triton attention) against HF, logits of 100
    new tokens after a cached 200-token prefix (the kernels' prefix path)."""
    from transformers import AutoModelForCausalLM

    torch.backends.cuda.matmul.allow_tf32 = False
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).cuda().eval()
    ids = random_ids(torch.Generator().manual_seed(3), 300)[0]
    with torch.inference_mode():
        ref = hf(torch.tensor([ids]).cuda()).logits[0, 200:].float()
    out = {}
    for attention in ("torch", "triton"):
        eng = engine(folder, attention, dtype="float32", blocks=64, cuda_graphs=False)
        blocks = [eng.pool.allocate() for _ in range(20)]
        forward(eng, ids[:200], 0, blocks)
        with torch.inference_mode():
            logits = eng.model.logits(forward(eng, ids, 200, blocks))
        out[attention] = round(((logits - ref).abs().max() / ref.abs().max()).item(), 7)
    return out


def engine_vs_hf(folder: str, hf, attention: str) -> dict:
    """Greedy tokens of a batch and of single prompts (CUDA graph buckets with Triton: the first
    prompt of a bucket captures it, the second replays it; the last one has a cached prefix), the
    logits of the last prompt position, and batch-1 decode speed."""
    from kb.rag.sampling import SamplingParams

    eng = engine(folder, attention, cuda_graphs=attention == "triton")
    params = SamplingParams(max_tokens=16, ignore_eos=True)
    g = torch.Generator().manual_seed(1)  # the same prompts for either attention
    prompts = random_ids(g, 37, 300, 5, 129)
    batch = eng.generate(prompts, params)
    more = random_ids(g, 37, 300, 5, 129) + [prompts[1] + random_ids(g, 100)[0]]
    singles = [eng.generate([p], params)[0] for p in more]
    with torch.inference_mode():
        want = hf(torch.tensor([prompts[1]]).cuda()).logits[0, -1].float()
        got = eng.model.logits(forward(eng, prompts[1], 0, [eng.pool.allocate() for _ in range(20)])[-1:])[0]
    eng.generate(prompts[:1], SamplingParams(max_tokens=8, ignore_eos=True))
    s, out = timed(lambda: eng.generate(random_ids(g, 32), SamplingParams(max_tokens=256, ignore_eos=True))[0])
    graphs = eng.runner.graphs
    return dict(greedy_same=f"{sum(o.token_ids == r for o, r in zip(batch, hf_greedy(hf, prompts)))}/{len(prompts)}",
                single_same=f"{sum(o.token_ids == r for o, r in zip(singles, hf_greedy(hf, more)))}/{len(more)}",
                prefill_graphs=sorted(graphs.prefill_graphs) if graphs else [], last_cached=singles[-1].cached_tokens,
                logits_rel_err=round(((got - want).abs().max() / want.abs().max()).item(), 4),
                decode_tok_s=round(256 / s, 1), kb_decode_tok_s=round(out.decode_tokens_per_s, 1))


def look_ahead(folder: str) -> dict:
    """Greedy tokens with each decode step queued ahead of the last one's tokens (kb.rag.ahead)
    against the same engine without, from a cold prefix cache each time: a batch whose answers end
    at different lengths and single prompts in bf16; in fp32, a stop token that ends one answer of
    the batch midway (its row of a queued step is dropped, and the others' step ran with it)."""
    from kb.rag.sampling import SamplingParams

    g = torch.Generator().manual_seed(4)
    prompts = random_ids(g, 40, 300, 7, 129, 64)
    lengths = [SamplingParams(max_tokens=n, ignore_eos=True) for n in (20, 64, 33, 64, 50)]
    out = {}
    for dtype in ("bfloat16", "float32"):
        eng = engine(folder, "triton", dtype=dtype)

        def run(on, params):
            eng.runner.runs_ahead = on
            eng.radix.evict(eng.pool.num_blocks)
            batch = [o.token_ids for o in eng.generate(prompts, params)]
            return batch + [eng.generate([p], q)[0].token_ids for p, q in zip(prompts[:2], params[:2])]
        plain = run(False, lengths)
        if dtype == "float32":
            lengths[1] = SamplingParams(max_tokens=64, stop_token_ids=(plain[1][10],))
            plain = run(False, lengths)
        out[dtype] = run(True, lengths) == plain
    return dict(ahead_same_tokens=out)


def generator() -> dict:
    folder, hf = random_model_folder()
    res = {attention: engine_vs_hf(folder, hf, attention) for attention in ("torch", "triton")}
    with torch.inference_mode():
        s, _ = timed(lambda: hf.generate(torch.randint(0, 150000, (1, 32)).cuda(), max_new_tokens=256,
                                         min_new_tokens=256, do_sample=False))
    res["hf"] = dict(decode_tok_s=round(256 / s, 1))
    del hf
    torch.cuda.empty_cache()
    res["fp32_logits_rel_err"] = fp32_logits(folder)
    res.update(look_ahead(folder))
    return res


def flat_on_gpu(n: int = 200_000, dims: int = 384, queries: int = 200) -> dict:
    """kb's flat index through torch on the GPU against its numpy path: same top 10, and speed."""
    import numpy as np

    from kb.index.vectors.flat import FlatIndex

    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, dims), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = np.arange(n, dtype=np.int64) * 3
    gpu, cpu = FlatIndex(ids, vecs), FlatIndex(ids, vecs)
    cpu._gpu = None  # the numpy path on the same vectors
    qs = rng.standard_normal((queries, dims), dtype=np.float32)
    same, t_gpu, t_cpu = 0, 0.0, 0.0
    gpu.search(qs[0], 10)
    for q in qs:
        t0 = time.perf_counter()
        a = gpu.search(q, 10)
        t1 = time.perf_counter()
        b = cpu.search(q, 10)
        t_gpu, t_cpu = t_gpu + t1 - t0, t_cpu + time.perf_counter() - t1
        same += len(set(a[0].tolist()) & set(b[0].tolist()))
    return dict(flat_gpu_used=gpu._gpu is not None, flat_recall_vs_numpy=same / (10 * queries),
                flat_gpu_ms=round(1000 * t_gpu / queries, 3), flat_numpy_ms=round(1000 * t_cpu / queries, 3))


if __name__ == "__main__":
    r = {**flat_on_gpu(), **generator()}
    for k, v in r.items():
        print(k, v)
    emit("gpu_check", **r)
