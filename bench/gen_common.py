"""What the generator benchmarks share: the model shapes, random-weight models for Hugging Face and
kb's engine over the very same weights, prompts of random tokens, HF's batched `generate`, timing
with peak memory. Imported by bench/generate.py, generate_long.py, profile_generate.py."""

from __future__ import annotations

import random

import torch
from common import timed

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


def _block_bytes(engine) -> int:
    from kb.rag.kv_cache import block_bytes

    mc = engine.model.cfg
    return block_bytes(mc.num_layers, engine.pool.block_size, mc.num_kv_heads, mc.head_dim, DTYPE)


def _cache(fraction: float):
    from kb.rag.kv_cache import CacheConfig

    return CacheConfig(memory_fraction=fraction, cpu_bytes=2**28)
