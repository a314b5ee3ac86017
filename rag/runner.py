"""The model runner: the one owner of the device. It resolves the device and dtype, loads the
decoder, sizes the paged KV pool to the memory there, picks the attention backend (and with it
the layers' kernels), captures CUDA graphs, and runs a step: the scheduler's plan in, one forward
over every planned token, a sampled token out for each sequence that reached its last token.

    runner = ModelRunner(EngineConfig(model="path/to/folder"))
    sampled = runner.run(plan)  # plan: [(sequence, new tokens)] -> [(sequence, tokens, log-probs)]
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Callable

import torch

from kb.rag.ahead import Queued, greedy_decode, queue
from kb.rag.attention import choose_backend
from kb.rag.batch import Batch
from kb.rag.config import EngineConfig
from kb.rag.decoder import CausalLM, ModelConfig, load_model
from kb.rag.kv_cache import BlockPool, CacheConfig, block_bytes, blocks_that_fit
from kb.rag.packed import pack, packable
from kb.rag.sampling import sample
from kb.rag.speculate import accept
from kb.rag.scheduler import Sequence

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# A lone long prompt's chunk on a GPU. H200, a 32,000-token prompt of the Qwen2.5-0.5B shape, the
# long-step tiles: in 8,192-token chunks 0.201 s, in 16,384 0.184 s, in one step 0.181 s (HF 0.189
# s); each chunk re-launches the layers and ends its causal attention with a tail of long tiles.
LONG_CHUNK = 32768


def resolve_device(device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    """`auto`: the GPU if there is one, in bf16; else the CPU, in fp32."""
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                       else ("cpu" if device == "auto" else device))
    if dtype == "auto":
        return dev, torch.bfloat16 if dev.type == "cuda" else torch.float32
    return dev, DTYPES[dtype]


def kv_pool(cfg: CacheConfig, mc: ModelConfig, dtype: torch.dtype, device: torch.device) -> BlockPool:
    """The KV pool: `cfg.num_blocks` blocks, or as many as its share of the memory holds."""
    per_block = block_bytes(mc.num_layers, cfg.block_size, mc.num_kv_heads, mc.head_dim, dtype)
    blocks = blocks_that_fit(cfg, per_block, device)
    return BlockPool(mc.num_layers, blocks, cfg.block_size, mc.num_kv_heads, mc.head_dim, dtype, device)


def fitting_chunk(free: int, mc: ModelConfig, dtype: torch.dtype, budget: int) -> int:
    """LONG_CHUNK, halved while twice a step of that many tokens' activations (projections,
    gate/up, residuals) would not fit in `free` bytes; never below `budget`."""
    width = 4 * mc.hidden_size + (mc.num_heads + 2 * mc.num_kv_heads) * mc.head_dim + 3 * mc.intermediate_size
    per_token = 2 * width * torch.empty(0, dtype=dtype).element_size()
    n = LONG_CHUNK
    while n > budget and 2 * n * per_token > free:
        n //= 2
    return max(n, budget)


class ModelRunner:
    def __init__(self, cfg: EngineConfig, model: CausalLM | None = None):
        """`model`: an already built model (benchmarks on random weights) instead of loading
        `cfg.model`."""
        self.cfg = cfg
        self.device, self.dtype = resolve_device(cfg.device, cfg.dtype)
        if self.device.type == "cpu":
            torch.set_num_threads(os.cpu_count() or 1)
        self.model = (load_model(Path(cfg.model).expanduser(), self.device, self.dtype) if model is None
                      else model.to(self.device, self.dtype))
        if self.device.type == "cpu" and packable(self.dtype):
            pack(self.model)  # oneDNN's layout: decode steps' few rows no longer repack each weight
        mc = self.model.cfg
        self.pool = kv_pool(cfg.cache, mc, self.dtype, self.device)
        self.token_budget = cfg.token_budget or (8192 if self.device.type == "cuda" else 512)
        self.attention = choose_backend(cfg.attention, self.device, mc.num_heads, mc.num_kv_heads,
                                        mc.head_dim ** -0.5)
        self.model.use_kernels(self.attention.layer_kernels)
        # decode batches are planned for shared prefixes where the backend reads them once
        self.prefix_tile = self.attention.prefix_tile if cfg.shared_prefix_decode else 0
        self.graphs = None
        # dynamic NTK rotates each token by its sequence's length: steps run eagerly, without graphs
        graphs = cfg.cuda_graphs and self.model.dynamic_rope is None
        if graphs and self.device.type == "cuda" and self.attention.name == "triton":
            from kb.rag.graphs import StepGraphs

            self.graphs = StepGraphs(self)
        self.long_chunk = self._long_chunk()  # from the memory left once graphs hold theirs
        # greedy decode steps are queued one ahead (kb.rag.ahead) where a GPU computes them
        # asynchronously: with CUDA graphs (dynamic NTK, which has none, would need its lengths)
        self.runs_ahead = self.graphs is not None
        self._queued: Queued | None = None

    def _long_chunk(self) -> int:
        """Tokens a lone prompt (nothing else running or waiting) may prefill in one step: with the
        Triton backend on a GPU, `fitting_chunk` of the memory left; else the token budget."""
        if self.cfg.token_budget or self.device.type != "cuda" or self.attention.name != "triton":
            return self.token_budget  # (the torch reference's scores grow with the chunk times its context)
        return fitting_chunk(torch.cuda.mem_get_info(self.device)[0], self.model.cfg, self.dtype, self.token_budget)

    def run(self, plan: list[tuple[Sequence, int]], during: Callable[[], None] | None = None, ahead: bool = False,
            ) -> list[tuple[Sequence, list[int], list[float] | None]]:
        """One step: each planned sequence's next `n` tokens (with its `draft`, the guesses of
        kb.rag.speculate) through the model, their keys and values written to its blocks; then,
        for each sequence whose tokens the step reaches the end of, the tokens it gains: one
        sampled token, or the draft's prefix that greedy decoding confirms and the token after it.
        [(sequence, tokens, log-probabilities of its params' `logprobs_of` or None)], in plan
        order. Sequences are not changed. `during`: host work to do once the step's kernels are
        queued, while a GPU computes them (before the sampled tokens are read back). `ahead`: also
        queue the step after this one (kb.rag.ahead; the plan is a greedy decode step and each
        sequence has a block for the token after its next one: the caller has checked both)."""
        if self.runs_ahead and (ahead or (self._queued is not None and greedy_decode(plan))):
            with torch.inference_mode():
                return self._run_queued(plan, during, ahead)
        self._queued = None
        ends = [i for i, (s, n) in enumerate(plan) if s.computed + n == len(s.tokens) + len(s.draft)]
        widths = [1 + len(plan[i][0].draft) for i in ends]
        with torch.inference_mode():
            logits = self._logits(plan, ends, widths)
            if during is not None:
                during()
            if not ends:
                return []
            done = [plan[i][0] for i in ends]
            last = list(itertools.accumulate(widths))
            # after each sequence's last token or guess (a plain decode step: every row, no gather)
            rows = logits if last[-1] == len(last) else logits[[r - 1 for r in last]]
            tokens = sample(rows, [s.params for s in done], [s.tokens for s in done], [s.generator for s in done])
            gained = [[t] for t in tokens]
            for j, s in enumerate(done):
                if s.draft:  # greedy after the last real token and each guess
                    gained[j] = accept(s.draft, logits[last[j] - widths[j]:last[j]].argmax(-1).tolist())
            picked = [_logprobs(logits[last[j] - widths[j]], s.params.logprobs_of) for j, s in enumerate(done)]
        return list(zip(done, gained, picked))

    def _run_queued(self, plan: list[tuple[Sequence, int]], during: Callable[[], None] | None,
                    ahead: bool) -> list[tuple[Sequence, list[int], None]]:
        """A greedy decode step: the one queued ahead of it if that was this plan, else queued now;
        with `ahead`, the next is queued behind it before its tokens are read."""
        seqs = [s for s, _ in plan]
        step, self._queued = self._queued, None
        rows = step.rows(plan) if step is not None else None
        if rows is None:
            step, rows = self._queue(seqs, [s.tokens[s.computed] for s in seqs]), list(range(len(seqs)))
        if ahead:
            ids = step.tokens
            if rows != list(range(len(step.seqs))):  # an index copied without waiting for the stream
                ids = ids[torch.tensor(rows).to(ids.device, non_blocking=True)]
            self._queued = self._queue(seqs, ids, next_step=True)
        if during is not None:
            during()
        tokens = step.read()
        return [(s, [tokens[r]], None) for s, r in zip(seqs, rows)]

    def _queue(self, seqs: list[Sequence], ids: list[int] | torch.Tensor, next_step: bool = False) -> Queued:
        """Queue a greedy decode step of `seqs` with new tokens `ids` (on the device if not yet on
        the host); `next_step`: the step after the one planned now."""
        ctx = [s.computed + 1 + next_step for s in seqs]
        tables = [s.blocks for s in seqs]
        if self.graphs is not None and self.graphs.fits(len(seqs)):
            logits = self.graphs.decode(ids, ctx, tables)
        else:
            logits = self.model.logits(self.forward(Batch.build([1] * len(seqs), ctx, tables, self.pool.block_size,
                                                                self.device, ids, prefix_tile=self.prefix_tile)))
        return queue(logits, seqs, ctx)

    def forward(self, batch: Batch, rope_lens: list[int] | None = None) -> torch.Tensor:
        """Hidden states (tokens, hidden) of the batch's new tokens (`batch.ids`); their keys and
        values are written to the pool. `rope_lens`: for dynamic NTK scaling (see `_rope_lens`)."""
        return self.model(batch.ids, batch.positions, self.attend(batch), rope_lens)

    def attend(self, batch: Batch) -> "Attend":
        return Attend(self.pool, self.attention, batch)

    def _logits(self, plan: list[tuple[Sequence, int]], ends: list[int], widths: list[int]) -> torch.Tensor:
        """(sum of widths, vocab) float32: the logits after the last `widths[j]` new tokens of each
        sequence that the step reaches the end of (`ends`: their indices in `plan`; a width is 1,
        or 1 + its guesses). A decode step replays a CUDA graph, as does one sequence's prefill of
        a bucket's size; anything else (guesses included) runs eagerly."""
        q_lens = [n for _, n in plan]
        ctx = [s.computed + n for s, n in plan]
        ids = [t for s, n in plan for t in (s.tokens[s.computed:] + s.draft if s.draft
                                            else s.tokens[s.computed:s.computed + n])]
        tables = [s.blocks for s, _ in plan]
        graphs = self.graphs
        if graphs is not None and len(ids) == len(plan) and graphs.fits(len(plan)):
            logits = graphs.decode(ids, ctx, tables)
            return logits if len(ends) == len(plan) else logits[ends]
        if graphs is not None and len(plan) == 1 and graphs.prefill_fits(len(ids)):
            hidden = graphs.prefill(ids, ctx[0], tables[0])
        else:
            hidden = self.forward(Batch.build(q_lens, ctx, tables, self.pool.block_size, self.device, ids,
                                              prefix_tile=self.prefix_tile), _rope_lens(self.model, plan))
        last = list(itertools.accumulate(q_lens))
        rows = [r for i, w in zip(ends, widths) for r in range(last[i] - w, last[i])]
        return self.model.logits(hidden[rows[0]:rows[0] + 1] if len(rows) == 1 else hidden[rows])


class Attend:
    """The decoder's attention for one batch: the backend over each layer's cache. Called as
    `attend(layer, qkv, cos, sin)`; for a small decode batch where the backend fuses decode layers,
    `fused` names their kernels and the decoder calls `qkv` and `rotated` instead."""

    def __init__(self, pool: BlockPool, attention, batch: Batch):
        self.pool, self.attention, self.batch = pool, attention, batch
        kernels = attention.decode_layers
        small = batch.decode and len(batch.q_lens) <= kernels.MAX_TOKENS
        self.fused = kernels if attention.fuse_decode and small else None

    def __call__(self, layer: int, qkv, cos, sin) -> torch.Tensor:
        return self.attention(self.pool.k[layer], self.pool.v[layer], qkv, cos, sin, self.batch)

    def qkv(self, layer: int, x, norm, proj, cos, sin) -> torch.Tensor:
        return self.attention.qkv(self.pool.k[layer], self.pool.v[layer], x, norm, proj, cos, sin, self.batch)

    def rotated(self, layer: int, q) -> torch.Tensor:
        return self.attention.rotated(self.pool.k[layer], self.pool.v[layer], q, self.batch)


def _rope_lens(model: CausalLM, plan: list[tuple[Sequence, int]]) -> list[int] | None:
    """For dynamic NTK scaling, each planned token's sequence length as Hugging Face's `generate`
    counts it: a prompt's tokens, computed in one forward there, its whole length; a generated
    token (or a guess), computed alone there, its position + 1. Then a token's rotation depends
    neither on how the prompt is chunked nor on speculation. None for other models."""
    if model.dynamic_rope is None:
        return None
    return [max(s.prompt_len, p + 1) for s, n in plan for p in range(s.computed, s.computed + n)]


def _logprobs(logits: torch.Tensor, ids: tuple[int, ...]) -> list[float] | None:
    """log-softmax of one row of logits at `ids` (None without ids)."""
    if not ids:
        return None
    return logits.float().log_softmax(-1)[list(ids)].tolist()
