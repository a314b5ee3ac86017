"""Batch-1 decoding on the CPU, in fp32, with real weights: kb's engine with its linear layers
packed for oneDNN (kb.rag.packed, what the runner does on a CPU), the same engine with torch's
dense products (the runner before packing), and Hugging Face `generate` (the baseline a user
would pick), on one prompt, alternating runs, best of `--runs`. The three must give the same
tokens; reported: decode tokens/s (the tokens after the first over the time after the first).

    python bench/cpu_decode.py [--model qwen2.5-coder-0.5b] [--tokens 64] [--runs 3]
"""

from __future__ import annotations

import argparse
import time

from common import emit, ratio

PROMPT = "Explain, step by step, how a write-ahead log lets a database recover after a crash."


def kb_engine(folder, packed: bool):
    import kb.rag.runner as runner
    from kb.rag.engine import Engine, EngineConfig

    real = runner.packable
    runner.packable = real if packed else (lambda dtype: False)
    try:
        return Engine(EngineConfig(model=str(folder), device="cpu"))
    finally:
        runner.packable = real


def kb_decode(engine, ids: list[int], tokens: int) -> tuple[float, list[int]]:
    from kb.rag.sampling import SamplingParams

    engine.generate([ids[:-1]], SamplingParams(max_tokens=1))  # the prompt cached: decode alone is timed
    out = engine.generate([ids], SamplingParams(max_tokens=tokens, ignore_eos=True))[0]
    return out.decode_tokens_per_s, out.token_ids


def hf_decode(model, ids: list[int], tokens: int) -> tuple[float, list[int]]:
    import torch

    x = torch.tensor([ids])
    with torch.inference_mode():
        t0 = time.perf_counter()
        model.generate(x, max_new_tokens=1, min_new_tokens=1, do_sample=False)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = model.generate(x, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        total = time.perf_counter() - t0
    return (tokens - 1) / (total - first), out[0, len(ids):].tolist()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    import torch
    from transformers import AutoModelForCausalLM

    from kb.rag.catalog import resolve

    folder = resolve(args.model)
    packed, dense = kb_engine(folder, True), kb_engine(folder, False)
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = packed.tokenizer
    ids = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    best: dict[str, float] = {}
    texts: dict[str, list[int]] = {}
    for _ in range(args.runs):
        for name, run in (("kb_packed", lambda: kb_decode(packed, ids, args.tokens)),
                          ("kb_dense", lambda: kb_decode(dense, ids, args.tokens)),
                          ("hf", lambda: hf_decode(hf, ids, args.tokens))):
            speed, texts[name] = run()
            best[name] = max(best.get(name, 0.0), speed)
    same = texts["kb_packed"] == texts["kb_dense"] == texts["hf"]
    for name, speed in best.items():
        print(f"  {name:10} {speed:6.2f} tok/s")
    print(f"packed / dense {ratio(best['kb_packed'], best['kb_dense'])}x, packed / HF "
          f"{ratio(best['kb_packed'], best['hf'])}x; same tokens: {same}")
    emit("cpu_decode", model=args.model, tokens=args.tokens, runs=args.runs, same_tokens=same,
         **{f"{k}_tok_s": round(v, 2) for k, v in best.items()},
         packed_over_dense=ratio(best["kb_packed"], best["kb_dense"]), packed_over_hf=ratio(best["kb_packed"], best["hf"]))


if __name__ == "__main__":
    main()
