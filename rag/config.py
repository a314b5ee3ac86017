"""The generator's configuration: one frozen dataclass for the engine and its model runner."""

from __future__ import annotations

from dataclasses import dataclass

from kb.rag.kv_cache import CacheConfig


@dataclass(frozen=True)
class EngineConfig:
    model: str  # a local Hugging Face folder (Llama or Qwen2 family)
    device: str = "auto"  # auto | cpu | cuda[:n]
    dtype: str = "auto"  # auto (bf16 on a GPU, fp32 on the CPU) | float32 | bfloat16 | float16
    cache: CacheConfig = CacheConfig()
    attention: str = "auto"  # auto | torch | triton
    token_budget: int = 0  # tokens per step; 0: 8192 on a GPU, 512 on the CPU
    max_seqs: int = 256
    disk_cache: str | None = None  # folder for KV blocks that outlive the process
    disk_cache_bytes: int = 2 * 2**30
    cuda_graphs: bool = True
    shared_prefix_decode: bool = True  # decode attention reads a prefix running sequences share once
    # prompt-lookup speculation (kb.rag.speculate): guessed tokens checked per greedy decode step; 0: off
    speculate: int = 0
    # a smaller model of the same tokenizer (a local folder) that makes the `speculate` guesses
    # instead of prompt lookup (kb.rag.draft)
    draft: str | None = None
