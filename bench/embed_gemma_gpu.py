"""EmbeddingGemma-300M's shape on a GPU, random weights (the real ones are too big to carry): kb's
encoder against Hugging Face bf16 SDPA over length-sorted batches (the baseline a user would
write), tokens per second, and the cosine of kb's vectors to fp32 on the same weights.

    python bench/embed_gemma_gpu.py [--texts 20000] [--mean-tokens 175]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import emit, machine, ratio, timed  # noqa: E402

GEMMA = dict(vocab_size=262144, hidden_size=768, intermediate_size=1152, num_hidden_layers=24,
             num_attention_heads=3, num_key_value_heads=1, head_dim=256, max_position_embeddings=2048,
             sliding_window=512, use_bidirectional_attention=True, query_pre_attn_scalar=256,
             rope_theta=1000000.0, pad_token_id=0, bos_token_id=2, eos_token_id=1,
             layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 4)


def hf_sorted(model, texts: list[list[int]], batch_tokens: int) -> np.ndarray:
    """Mean-pooled, normalised vectors of `texts` through `model`, length-sorted padded batches."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.zeros((len(texts), GEMMA["hidden_size"]), device="cuda")
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and len(texts[order[end]]) * (end + 1 - start) <= batch_tokens:
            end += 1
        batch = [texts[i] for i in order[start:end]]
        width = max(map(len, batch))
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, t in enumerate(batch):
            ids[i, :len(t)], mask[i, :len(t)] = torch.tensor(t), 1
        ids, mask = ids.cuda(non_blocking=True), mask.cuda(non_blocking=True)
        with torch.inference_mode():
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            m = mask.unsqueeze(-1).float()
            out[order[start:end]] = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1)
        start = end
    return out.cpu().numpy()


def main() -> None:
    from transformers import Gemma3TextConfig, Gemma3TextModel

    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=20000)
    ap.add_argument("--mean-tokens", type=int, default=175)
    args = ap.parse_args()
    rng = random.Random(0)
    # kb's chunks: at most 240 tokens, with the prompt, <bos> and <eos> at most 250
    lengths = [min(248, max(8, int(rng.gauss(args.mean_tokens, 60)))) for _ in range(args.texts)]
    texts = [[2] + [rng.randrange(100, GEMMA["vocab_size"]) for _ in range(n)] + [1] for n in lengths]
    tokens = sum(map(len, texts))
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(**GEMMA)
    fp32 = Gemma3TextModel(cfg).cuda().eval()
    with tempfile.TemporaryDirectory() as tmp:
        fp32.save_pretrained(tmp)
        tok = Path(__file__).resolve().parents[1] / ".gpu" / "tok" / "tokenizer.json"
        (Path(tmp) / "tokenizer.json").write_bytes(tok.read_bytes())
        (Path(tmp) / "1_Pooling").mkdir()
        (Path(tmp) / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
        from kb.embed.encoder import EmbedConfig, Encoder

        enc = Encoder(EmbedConfig(model=tmp))
        enc.head, enc.tail, enc._tail = [], [], np.zeros(0, np.int32)  # texts carry <bos>/<eos> already
        hf = Gemma3TextModel.from_pretrained(tmp, dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
        hf_sorted(hf, texts[:512], 65536)
        enc.embed_passages(texts[:512])
        rows = {}
        for bt in (16384, 65536):
            s, hf_vecs = timed(lambda: hf_sorted(hf, texts, bt))
            rows[f"hf_bf16_sdpa_{bt}"] = tokens / s
        s, ours = timed(lambda: enc.embed_passages(texts))
        rows["kb"] = tokens / s
    ref = hf_sorted(fp32, texts[:2000], 16384)
    cos = float((ours[:2000] * ref).sum(1).min())
    base = max(v for k, v in rows.items() if k.startswith("hf"))
    print(f"\n{machine()['gpu']}, EmbeddingGemma-300M shape, random weights, {args.texts} texts, {tokens} tokens")
    for k, v in rows.items():
        print(f"{k:24}{v / 1e6:8.3f}M tokens/s")
    print(f"kb / best HF: {ratio(rows['kb'], base)}x; min cosine kb vs fp32 (2,000 texts): {cos:.6f}")
    emit("embed_gemma_gpu", machine=machine(), tokens=tokens, **{k: round(v) for k, v in rows.items()},
         kb_over_hf=ratio(rows["kb"], base), min_cosine_fp32=round(cos, 6))


if __name__ == "__main__":
    main()
