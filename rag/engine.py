"""The generation engine: a model, its paged KV cache, the radix prefix cache and the scheduler.

    engine = Engine(EngineConfig(model="path/to/folder"))
    outputs = engine.generate([ids1, ids2], SamplingParams(max_tokens=64))
    for piece in engine.stream(ids, params): ...

A step is: schedule, one forward over every scheduled token, sample where a sequence reached its
end, then post-process (stop conditions, prefix-cache insertion). Each output reports its prompt
tokens, the tokens served from the cache, the time to first token and the decode speed.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from kb.errors import UsageError
from kb.rag.attention import PREFIX_TILE, Batch, choose_backend
from kb.rag.kv_cache import BlockPool, CacheConfig, block_bytes, blocks_that_fit
from kb.rag.model import CausalLM, load_model
from kb.rag.radix import RadixCache
from kb.rag.sampling import SamplingParams, sample
from kb.rag.scheduler import Scheduler, Sequence


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


@dataclass
class Output:
    id: int
    prompt_tokens: int
    cached_tokens: int
    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" (end of sequence or a stop string) | "length"
    ttft_s: float
    decode_tokens_per_s: float


class Engine:
    def __init__(self, cfg: EngineConfig, model: CausalLM | None = None):
        """`model`: an already built model (benchmarks on random weights) instead of loading
        `cfg.model`; such an engine has no tokenizer (outputs carry token ids, no text)."""
        self.cfg = cfg
        folder = Path(cfg.model).expanduser()
        self.device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                                   else ("cpu" if cfg.device == "auto" else cfg.device))
        dtype = {"auto": torch.bfloat16 if self.device.type == "cuda" else torch.float32,
                 "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.dtype]
        if self.device.type == "cpu":
            torch.set_num_threads(os.cpu_count() or 1)
        if model is None:
            self.model = load_model(folder, self.device, dtype)
            self.tokenizer, self.eos = _tokenizer(folder), _eos_ids(folder)
        else:
            self.model, self.tokenizer, self.eos = model.to(self.device, dtype), None, set()
        mc = self.model.cfg
        per_block = block_bytes(mc.num_layers, cfg.cache.block_size, mc.num_kv_heads, mc.head_dim, dtype)
        blocks = blocks_that_fit(cfg.cache, per_block, self.device)
        self.pool = BlockPool(mc.num_layers, blocks, cfg.cache.block_size, mc.num_kv_heads, mc.head_dim,
                              dtype, self.device)
        disk = None
        if cfg.disk_cache:
            from kb.rag.disk_cache import DiskCache

            disk = DiskCache(Path(cfg.disk_cache), _fingerprint(folder, dtype, cfg.cache.block_size),
                             cfg.disk_cache_bytes)
        self.radix = RadixCache(self.pool, disk)
        budget = cfg.token_budget or (8192 if self.device.type == "cuda" else 512)
        self.scheduler = Scheduler(self.pool, self.radix, budget, cfg.max_seqs)
        self.attention = choose_backend(cfg.attention, self.device, mc.num_heads, mc.num_kv_heads,
                                        mc.head_dim ** -0.5)
        if self.attention.name == "triton":
            from kb.kernels import fused

            self.model.use_kernels(fused)
        self._ids = itertools.count()
        # shared prefixes are planned for the Triton decode kernel (the torch reference needs none)
        self.prefix_tile = PREFIX_TILE if cfg.shared_prefix_decode and self.attention.name == "triton" else 0
        self.graphs = None
        if cfg.cuda_graphs and self.device.type == "cuda" and self.attention.name == "triton":
            from kb.rag.graphs import StepGraphs

            self.graphs = StepGraphs(self)

    # -- public API -------------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams]) -> list[Output]:
        """Run every prompt (token ids) to completion in one continuous batch."""
        plist = params if isinstance(params, list) else [params] * len(prompts)
        seqs = [self._add(p, sp) for p, sp in zip(prompts, plist)]
        while self.scheduler.busy:
            self.step()
        return [self._output(s) for s in seqs]

    def stream(self, prompt: list[int], params: SamplingParams) -> Iterator[str]:
        """Yield the answer's text as it grows (pieces), then stop; `last_output` has the stats."""
        seq = self._add(prompt, params)
        seq.streamed = True
        sent = 0
        while seq.finish_reason is None:
            self.step()
            if len(seq.text) > sent:
                yield seq.text[sent:]
                sent = len(seq.text)
        self.last_output = self._output(seq)

    def persist(self) -> int:
        """Write the prefix cache's blocks to the disk cache (then trim it to its size cap)."""
        if self.radix.disk is None:
            return 0
        written = self.radix.persist()
        self.radix.disk.trim()
        return written

    # -- one step ---------------------------------------------------------------------------------
    def step(self) -> None:
        plan = self.scheduler.schedule()
        if not plan:
            raise UsageError(f"the KV cache ({self.pool.num_blocks} blocks of {self.pool.block_size} "
                             "tokens) cannot hold one sequence: give it more memory")
        seqs = [s for s, _ in plan]
        q_lens = [n for _, n in plan]
        ctx = [s.computed + n for s, n in plan]
        ids = [t for s, n in plan for t in s.tokens[s.computed:s.computed + n]]
        tables = [s.blocks for s in seqs]
        ends = [i for i, (s, n) in enumerate(plan) if s.computed + n == len(s.tokens)]
        with torch.inference_mode():
            if self.graphs is not None and len(ids) == len(seqs) and self.graphs.fits(len(seqs)):
                logits = self.graphs.run(ids, ctx, tables)[ends]
            else:
                if self.graphs is not None and len(plan) == 1 and self.graphs.prefill_fits(len(ids)):
                    hidden = self.graphs.prefill(ids, ctx[0], tables[0])
                else:
                    batch = Batch.build(q_lens, ctx, tables, self.pool.block_size, self.device, ids,
                                        prefix_tile=self.prefix_tile)
                    hidden = self.model(batch.ids, batch.positions, self._attend(batch))
                offsets = list(itertools.accumulate(q_lens))
                rows = [offsets[i] - 1 for i in ends]
                logits = self.model.logits(hidden[rows[0]:rows[0] + 1] if len(rows) == 1 else hidden[rows])
            chosen = sample(logits, [seqs[i].params for i in ends],
                            [seqs[i].tokens for i in ends],
                            [seqs[i].generator for i in ends]) if ends else []
        sampled = time.perf_counter()  # the tokens exist: a first one's time, before the bookkeeping
        for i in ends:
            if seqs[i].first_token is None:
                seqs[i].first_token = sampled
        for s, n in plan:
            s.computed += n
            if s.computed >= s.prompt_len and s.computed - n < s.prompt_len:
                self.scheduler.prefilled(s)
        for i, token in zip(ends, chosen):
            self._append(seqs[i], token)

    def _attend(self, batch: Batch):
        pool, attention = self.pool, self.attention

        def attend(layer: int, qkv, cos, sin):
            return attention(pool.k[layer], pool.v[layer], qkv, cos, sin, batch)
        return attend

    def _append(self, seq: Sequence, token: int) -> None:
        now = time.perf_counter()
        seq.tokens.append(token)
        p = seq.params
        out = seq.output
        reason = None
        if (token in self.eos and not p.ignore_eos) or token in p.stop_token_ids:
            reason = "stop"
            out = out[:-1]
        if reason is None and len(seq.output) >= p.max_tokens:
            reason = "length"
        # Text is decoded only where it is needed: stop strings, streaming, and the end.
        if self.tokenizer is not None and (p.stop or seq.streamed or reason is not None):
            seq.text = self.tokenizer.decode(out, skip_special_tokens=True)
            for stop in p.stop:
                at = seq.text.find(stop)
                if at >= 0:
                    seq.text, reason = seq.text[:at], "stop"
        if reason is not None:
            seq.finish_reason, seq.finished = reason, now
            self.scheduler.finish(seq)

    def _add(self, prompt: list[int], params: SamplingParams) -> Sequence:
        if not prompt:
            raise UsageError("empty prompt")
        if len(prompt) + params.max_tokens > self.model.cfg.max_positions:
            raise UsageError(f"prompt ({len(prompt)} tokens) + max tokens ({params.max_tokens}) exceed "
                             f"the model's {self.model.cfg.max_positions} positions")
        gen = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
        seq = Sequence(next(self._ids), list(prompt), len(prompt), params, generator=gen)
        self.scheduler.add(seq)
        return seq

    def _output(self, seq: Sequence) -> Output:
        toks = seq.output
        if seq.finish_reason == "stop" and toks and (toks[-1] in self.eos or toks[-1] in seq.params.stop_token_ids):
            toks = toks[:-1]
        decode_s = (seq.finished or seq.first_token) - seq.first_token
        return Output(seq.id, seq.prompt_len, seq.cached, toks, seq.text, seq.finish_reason,
                      seq.first_token - seq.arrived, (len(seq.output) - 1) / decode_s if decode_s > 0 else 0.0)


def _tokenizer(folder: Path):
    from kb.embed.encoder import quiet_transformers

    quiet_transformers()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def _eos_ids(folder: Path) -> set[int]:
    import json

    ids: set[int] = set()
    for name in ("generation_config.json", "config.json"):
        try:
            value = json.loads((folder / name).read_text()).get("eos_token_id")
        except (OSError, ValueError):
            continue
        ids.update(value if isinstance(value, list) else [value] if value is not None else [])
    return ids


def _fingerprint(folder: Path, dtype: torch.dtype, block_size: int) -> str:
    """Which KV a disk block holds: the weights' bytes (sizes and names), dtype and block size."""
    h = hashlib.sha256(f"{dtype}|{block_size}".encode())
    for f in sorted(folder.glob("*.safetensors")) + [folder / "config.json"]:
        st = f.stat()
        h.update(f"{f.name}|{st.st_size}".encode())
        with open(f, "rb") as fh:  # the header of a safetensors file names every tensor's shape
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]
