"""A tiny real encoder for the fast test tier: a 2-layer BERT with seeded random weights and MiniLM's
own tokenizer, saved as a Hugging Face folder, so that `kb index --model FOLDER` runs kb's real code
path (tokenizer, chunker, transformers forward, vector index) in milliseconds instead of seconds.
Its vectors mean nothing: tests of it assert shapes, counts and determinism, never rankings.
And `random_engine`: kb's generator over a tiny random decoder's weights."""

from __future__ import annotations

import shutil
from pathlib import Path

HIDDEN = 32  # vector dims of the tiny encoder
# The real model's tokenizer and its 256-token input limit (sentence_bert_config.json).
COPIED = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
          "sentence_bert_config.json")


def write_tiny_encoder(dest: Path, seed: int = 0) -> Path:
    """Write the tiny encoder into the new folder `dest` and return it; the same seed writes the
    same weights, hence the same vectors."""
    import torch
    from transformers import BertConfig, BertModel

    from kb.common import quiet_transformers
    from kb.embed.tokenizer import default_model_dir

    quiet_transformers()
    source = default_model_dir()
    config = BertConfig(vocab_size=30522, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=2 * HIDDEN, max_position_embeddings=512, pad_token_id=0)
    with torch.random.fork_rng(devices=[]):  # seeded here without moving the tests' own RNG
        torch.manual_seed(seed)
        model = BertModel(config)
    model.save_pretrained(dest, safe_serialization=True)
    for name in COPIED:
        shutil.copy(source / name, dest / name)
    return dest


def random_engine(cfg, weights: dict, block_size: int = 16, blocks: int = 64, draft: tuple | None = None, **engine):
    """kb's generation engine on the CPU in fp32 over a Hugging Face decoder's state dict (a tiny
    random model): `cfg`, its kb.rag.decoder.ModelConfig; `draft`, (cfg, state dict) of a draft
    model (kb.rag.draft); `engine`, other EngineConfig fields."""
    import torch

    from kb.rag.decoder import build_model
    from kb.rag.engine import Engine, EngineConfig
    from kb.rag.kv_cache import CacheConfig

    cpu = torch.device("cpu")
    model = build_model(cfg, weights, cpu, torch.float32)
    small = build_model(*draft, cpu, torch.float32) if draft is not None else None
    cache = CacheConfig(block_size=block_size, num_blocks=blocks)
    return Engine(EngineConfig(model="(random weights)", device="cpu", cache=cache, **engine), model=model,
                  draft=small)
