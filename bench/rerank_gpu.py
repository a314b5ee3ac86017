"""Reranking latency on a GPU, random weights of the real shapes (weights too big to carry; speed
does not depend on their values): 20 candidates judged in one engine batch, cold (each passage's
KV computed) and warm (the passages cached, a new query's ~12 tokens computed per passage), p50 over
queries, against Hugging Face's forward of the same 20 full prompts (padded batch, SDPA) as the
baseline a user would write. Correctness: kb's log-probabilities of the two answer tokens against
Hugging Face's on the same weights.

    python bench/rerank_gpu.py [--candidates 20] [--passage 320] [--queries 20]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from common import emit, machine, timed  # noqa: E402
from gen_common import DEV, DTYPE, QWEN_05B, hf_model, kb_engine, tokens  # noqa: E402

SMOLLM2_135M = dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=49152, hidden_size=576,
                    intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                    max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)
YES_NO = (9891, 2152)


def hf_judge(hf, prompts: list[list[int]]) -> torch.Tensor:
    """(n, 2) log-probabilities of the answer tokens after each prompt, one padded batch."""
    width = max(map(len, prompts))
    ids = torch.zeros((len(prompts), width), dtype=torch.long, device=DEV)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):  # left-padded, so every prompt ends at the last position
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    with torch.inference_mode():
        logits = hf(input_ids=ids, attention_mask=mask).logits[:, -1].float()
    return logits.log_softmax(-1)[:, list(YES_NO)]


def run(name: str, shape: dict, args) -> dict:
    from kb.rag.sampling import SamplingParams

    rng = random.Random(0)
    hf = hf_model(shape)
    engine = kb_engine(hf, shape)
    params = SamplingParams(max_tokens=1, logprobs_of=YES_NO)
    vocab = shape["vocab_size"]
    pad = -args.passage % engine.pool.block_size
    passages = [tokens(args.passage + pad, vocab, rng) for _ in range(args.candidates * (args.queries + 2))]
    queries = [tokens(12, vocab, rng) for _ in range(args.queries + 2)]
    engine.generate([passages[-1] + queries[-1]], params)  # warm up: captures, kernels
    cold, warm, hf_s = [], [], []
    for q in range(args.queries):
        group = passages[q * args.candidates:(q + 1) * args.candidates]
        s, _ = timed(lambda: engine.generate([p + queries[q] for p in group], params))
        cold.append(s)
        s, outs = timed(lambda: engine.generate([p + queries[q + 1] for p in group], params))
        warm.append(s)
        assert sum(o.prompt_tokens - o.cached_tokens for o in outs) <= args.candidates * 12
        s, ref = timed(lambda: hf_judge(hf, [p + queries[q + 1] for p in group]))
        hf_s.append(s)
    ours = torch.tensor([o.logprobs for o in outs], device=DEV)
    err = float((ours - ref).abs().max())
    row = {"cold_p50_ms": statistics.median(cold) * 1000, "warm_p50_ms": statistics.median(warm) * 1000,
           "hf_p50_ms": statistics.median(hf_s) * 1000, "max_logprob_diff": err}
    print(f"{name}: cold p50 {row['cold_p50_ms']:.1f} ms, warm p50 {row['warm_p50_ms']:.1f} ms, "
          f"HF forward of the full prompts p50 {row['hf_p50_ms']:.1f} ms; max |log p| diff to HF {err:.4f}")
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--passage", type=int, default=320, help="tokens of a passage's prompt prefix")
    ap.add_argument("--queries", type=int, default=20)
    args = ap.parse_args()
    rows = {}
    for name, shape in (("qwen2.5-coder-0.5b", QWEN_05B), ("smollm2-135m", SMOLLM2_135M)):
        rows[name] = run(name, shape, args)
        torch.cuda.empty_cache()
    print(f"\n{machine()['gpu']}, {DTYPE}, {args.candidates} candidates of {args.passage} tokens")
    print(f"{'model':22}{'cold p50 ms':>14}{'warm p50 ms':>14}{'HF p50 ms':>12}{'HF/warm':>10}")
    for name, r in rows.items():
        print(f"{name:22}{r['cold_p50_ms']:14.1f}{r['warm_p50_ms']:14.1f}{r['hf_p50_ms']:12.1f}"
              f"{r['hf_p50_ms'] / r['warm_p50_ms']:10.1f}")
    emit("rerank_gpu", machine=machine(), candidates=args.candidates, passage=args.passage,
         **{f"{n}_{k}": round(v, 4) for n, r in rows.items() for k, v in r.items()})


if __name__ == "__main__":
    main()
