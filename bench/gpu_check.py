"""One device call: kernel tests, then kb's engine against HF on random weights (logits and greedy
tokens), then rough timings. Prints a short table last."""
import json, os, sys, tempfile, time
import torch

def fp32_logits(folder):
    """Same random weights in fp32: kb (torch and triton attention) against HF, last-position logits."""
    from transformers import AutoModelForCausalLM
    from kb.rag.engine import Engine, EngineConfig
    from kb.rag.kv_cache import CacheConfig
    from kb.rag.attention import Batch
    torch.backends.cuda.matmul.allow_tf32 = False
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).cuda().eval()
    ids = torch.randint(0, 150000, (300,), generator=torch.Generator().manual_seed(3)).tolist()
    with torch.inference_mode():
        ref = hf(torch.tensor([ids]).cuda()).logits[0].float()
    out = {}
    for attn in ("torch", "triton"):
        eng = Engine(EngineConfig(model=folder, attention=attn, dtype="float32", cache=CacheConfig(num_blocks=64), cuda_graphs=False))
        blocks = [eng.pool.allocate() for _ in range(20)]
        # a cached prefix of 200 tokens, then 100 new ones: the prefix path of the kernels
        with torch.inference_mode():
            eng.model(torch.tensor(ids[:200]).cuda(), torch.arange(200).cuda(), eng._attend(Batch.build([200], [200], [blocks], 16, eng.device)))
            h = eng.model(torch.tensor(ids[200:]).cuda(), torch.arange(200, 300).cuda(), eng._attend(Batch.build([100], [300], [blocks], 16, eng.device)))
            kl = eng.model.logits(h)
        out[attn] = round(((kl - ref[200:]).abs().max() / ref[200:].abs().max()).item(), 7)
    del hf
    return out


def engine_vs_hf(arch="qwen2"):
    from transformers import AutoConfig, AutoModelForCausalLM
    from kb.rag.engine import Engine, EngineConfig
    from kb.rag.kv_cache import CacheConfig
    from kb.rag.sampling import SamplingParams
    cfg = dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", vocab_size=151936, hidden_size=896,
               intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
               max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
               torch_dtype="bfloat16", eos_token_id=151645, bos_token_id=151643)
    folder = tempfile.mkdtemp()
    json.dump(cfg, open(f"{folder}/config.json", "w"))
    hf_cfg = AutoConfig.from_pretrained(folder)
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(hf_cfg, dtype=torch.bfloat16)
    hf.save_pretrained(folder)
    hf = hf.cuda().eval()
    # a tokenizer for decoding text: none exists for random weights; the engine needs one
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")))
    tok.save_pretrained(folder)
    res = {}
    for attn in ("torch", "triton"):
        eng = Engine(EngineConfig(model=folder, attention=attn, cache=CacheConfig(num_blocks=4096), cuda_graphs=(attn == "triton")))
        g = torch.Generator().manual_seed(1)
        prompts = [torch.randint(0, 150000, (n,), generator=g).tolist() for n in (37, 300, 5, 129)]
        with torch.inference_mode():
            ref = [hf.generate(torch.tensor([p]).cuda(), max_new_tokens=16, do_sample=False)[0, len(p):].tolist() for p in prompts]
            hl = hf(torch.tensor([prompts[1]]).cuda()).logits[0, -1].float()
        outs = eng.generate(prompts, SamplingParams(max_tokens=16, ignore_eos=True))
        same = sum(o.token_ids == r for o, r in zip(outs, ref))
        # one at a time: single-sequence prefills (CUDA graphs of token buckets with triton: the
        # first prompt of a bucket captures it, the second replays it), then a cached-prefix prefill
        more = [torch.randint(0, 150000, (n,), generator=g).tolist() for n in (37, 300, 5, 129)]
        more.append(prompts[1] + torch.randint(0, 150000, (100,), generator=g).tolist())
        with torch.inference_mode():
            ref2 = [hf.generate(torch.tensor([p]).cuda(), max_new_tokens=16, do_sample=False)[0, len(p):].tolist() for p in more]
        singles = [eng.generate([p], SamplingParams(max_tokens=16, ignore_eos=True))[0] for p in more]
        same_single = sum(o.token_ids == r for o, r in zip(singles, ref2))
        # logits of the last prompt position through the engine's forward
        from kb.rag.attention import Batch
        seq_blocks = [eng.pool.allocate() for _ in range(20)]
        b = Batch.build([300], [300], [seq_blocks], 16, eng.device)
        with torch.inference_mode():
            h = eng.model(torch.tensor(prompts[1]).cuda(), torch.arange(300).cuda(), eng._attend(b))
            kl = eng.model.logits(h[-1:])[0]
        err = ((kl - hl).abs().max() / hl.abs().max()).item()
        # batch-1 decode speed
        p = prompts[0]
        eng.generate([p], SamplingParams(max_tokens=8, ignore_eos=True))
        torch.cuda.synchronize(); t0 = time.perf_counter()
        o = eng.generate([torch.randint(0, 150000, (32,), generator=g).tolist()], SamplingParams(max_tokens=256, ignore_eos=True))[0]
        torch.cuda.synchronize(); dt = time.perf_counter() - t0
        res[attn] = dict(greedy_same=f"{same}/{len(prompts)}", single_same=f"{same_single}/{len(more)}",
                         prefill_graphs=sorted(eng.graphs.prefill_graphs) if eng.graphs else [],
                         last_cached=singles[-1].cached_tokens, logits_rel_err=round(err, 4), decode_tok_s=round(256 / dt, 1), kb_decode_tok_s=round(o.decode_tokens_per_s, 1))
    torch.cuda.synchronize(); t0 = time.perf_counter()
    with torch.inference_mode():
        hf.generate(torch.randint(0, 150000, (1, 32)).cuda(), max_new_tokens=256, min_new_tokens=256, do_sample=False)
    torch.cuda.synchronize()
    res["hf"] = dict(decode_tok_s=round(256 / (time.perf_counter() - t0), 1))
    del hf, eng
    torch.cuda.empty_cache()
    res["fp32_logits_rel_err"] = fp32_logits(folder)
    return res

def flat_on_gpu(n=200_000, dims=384, queries=200):
    """kb's flat index through torch on the GPU against its numpy path: same top 10, and speed."""
    import numpy as np
    from kb.index.vectors.flat import FlatIndex
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, dims), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = np.arange(n, dtype=np.int64) * 3
    gpu, cpu = FlatIndex(ids, vecs), FlatIndex(ids, vecs)
    cpu._gpu = None
    qs = rng.standard_normal((queries, dims), dtype=np.float32)
    same, t_gpu, t_cpu = 0, 0.0, 0.0
    gpu.search(qs[0], 10)
    for q in qs:
        t0 = time.perf_counter(); a = gpu.search(q, 10); t1 = time.perf_counter(); b = cpu.search(q, 10); t2 = time.perf_counter()
        same += len(set(a[0].tolist()) & set(b[0].tolist()))
        t_gpu += t1 - t0; t_cpu += t2 - t1
    return dict(flat_gpu_used=gpu._gpu is not None, flat_recall_vs_numpy=same / (10 * queries),
                flat_gpu_ms=round(1000 * t_gpu / queries, 3), flat_numpy_ms=round(1000 * t_cpu / queries, 3))


if __name__ == "__main__":
    r = {**flat_on_gpu(), **engine_vs_hf()}
    for k, v in r.items():
        print(k, v)
    print(json.dumps(r))
