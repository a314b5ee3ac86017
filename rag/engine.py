"""The generation engine: requests in, outputs out, over the scheduler, the prefix cache (the radix
tree, with its disk tier) and the model runner (kb.rag.runner: device, model, KV pool, forward).

    engine = Engine(EngineConfig(model="path/to/folder"))
    outputs = engine.generate([ids1, ids2], SamplingParams(max_tokens=64))
    for piece in engine.stream(ids, params): ...

A step is: schedule, run (one forward over every scheduled token, a token sampled where a
sequence reached its end), then post-process (stop conditions, prefix-cache insertion). Each
output reports its prompt tokens, the tokens served from the cache, the time to first token and
the decode speed.
"""

from __future__ import annotations

import atexit
import gc
import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from kb.errors import UsageError
from kb.rag.ahead import greedy_decode
from kb.rag.config import EngineConfig
from kb.rag.decoder import CausalLM
from kb.rag.kv_cache import BlockPool
from kb.rag.prefix_cache import PrefixCache
from kb.rag.radix import RadixCache
from kb.rag.runner import ModelRunner
from kb.rag.sampling import SamplingParams
from kb.rag.scheduler import Scheduler, Sequence


# Engines freeze what the process holds (Engine.__init__); at exit it is thawed so that the last
# collection frees it all (frozen, Triton's bindings print leak reports as the interpreter ends).
atexit.register(gc.unfreeze)


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
    logprobs: list[float] | None = None  # of the params' `logprobs_of` ids, at the first answer token

    @property
    def new_tokens(self) -> int:
        return len(self.token_ids)


class Engine:
    """Requests, the scheduler, the prefix cache and the outputs; the model runner does the rest."""

    def __init__(self, cfg: EngineConfig, model: CausalLM | None = None, draft: CausalLM | None = None):
        """`model`: an already built model (benchmarks on random weights) instead of loading
        `cfg.model`; such an engine has no tokenizer (outputs carry token ids, no text). `draft`:
        likewise, a built draft model instead of `cfg.draft`."""
        # What the process holds before its first engine (imported libraries, a caller's model)
        # outlives every step: frozen out of the collector's full passes, which otherwise stall a
        # step to scan it all (H200, the 7B workload's 500 requests: one such pass took 0.32 s of a
        # 1.5 s run). Once: a later engine's start would freeze the engines alive then, and one of
        # them dropped in a reference cycle (CUDA graphs hold their runner) would never be freed.
        if gc.get_freeze_count() == 0:
            gc.collect()
            gc.freeze()
        self.cfg = cfg
        drafter = _drafter(cfg, draft)  # before the target: its KV pool takes most of what is left
        self.runner = ModelRunner(cfg, model)
        folder = Path(cfg.model).expanduser()
        self.tokenizer, self.eos = (_tokenizer(folder), _eos_ids(folder)) if model is None else (None, set())
        if drafter is not None:
            drafter.limit(self.model.cfg.vocab_size)
            if self.tokenizer is not None and cfg.draft:
                _same_tokenizer(self.tokenizer, Path(cfg.draft).expanduser())
        disk = None
        if cfg.disk_cache:
            from kb.rag.disk_cache import DiskCache, fingerprint

            disk = DiskCache(Path(cfg.disk_cache), fingerprint(folder, self.runner.dtype, cfg.cache.block_size),
                             cfg.disk_cache_bytes)
        self.radix: PrefixCache = RadixCache(self.pool, disk)
        self.scheduler = Scheduler(self.pool, self.radix, self.runner.token_budget, cfg.max_seqs, cfg.speculate,
                                   share_limit=self.model.dynamic_rope, long_chunk=self.runner.long_chunk,
                                   drafter=drafter)
        self._ids = itertools.count()

    @property
    def model(self) -> CausalLM:
        return self.runner.model

    @property
    def pool(self) -> BlockPool:
        """The KV pool: the runner's tensors, the scheduler's and prefix cache's blocks."""
        return self.runner.pool

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
        return self.radix.persist()

    @property
    def disk_folder(self):
        """Where the disk cache keeps this model's blocks (None without a disk cache)."""
        return self.radix.disk.folder if self.radix.disk is not None else None

    # -- one step ---------------------------------------------------------------------------------
    def step(self) -> None:
        """Schedule, run the model over the plan, then post-process what it sampled. The prompts
        the step completes go into the prefix cache while a GPU computes them, once the step's
        kernels are queued (a 32K prompt's 2,000 blocks: 19 ms under cProfile on the H200's
        host, after the step, before this). Their keys are written on the same stream before
        anything reads them; a step that fails before its launch is over inserts nothing."""
        plan = self.scheduler.schedule()
        if not plan:
            raise UsageError(f"the KV cache ({self.pool.num_blocks} blocks of {self.pool.block_size} "
                             "tokens) cannot hold one sequence: give it more memory")
        done = [s for s, n in plan if s.computed < s.prompt_len <= s.computed + n]
        sampled = self.runner.run(plan, during=lambda: [self.scheduler.prefilled(s) for s in done],
                                  ahead=self._reserve_ahead(plan))
        self._postprocess(plan, sampled)

    def _reserve_ahead(self, plan: list[tuple[Sequence, int]]) -> bool:
        """Whether the step after this one is queued now as well (kb.rag.ahead): greedy decoding
        with nothing waiting to join and no guesses, where not every sequence ends by its length in
        this step (the rows of those that do are dropped) and each has a block for the token after
        its next one, reserved here (evicting from the prefix cache if need be; a failure keeps
        what it reserved before it, which those sequences need at their next step anyway)."""
        s = self.scheduler
        if not self.runner.runs_ahead or s.waiting or s.speculate or not greedy_decode(plan):
            return False
        if all(len(q.output) + 1 >= q.params.max_tokens for q, _ in plan):
            return False
        return s.reserve([q for q, _ in plan])

    def _postprocess(self, plan: list[tuple[Sequence, int]], sampled: list[tuple[Sequence, list[int], list | None]]) -> None:
        now = time.perf_counter()  # the tokens exist: a first one's time, before the bookkeeping
        for seq, _, logprobs in sampled:
            if seq.first_token is None:
                seq.first_token, seq.logprobs = now, logprobs
        for s, n in plan:
            s.computed += n - len(s.draft)  # guessed tokens count once accepted, below
        for seq, tokens, _ in sampled:
            seq.computed += len(tokens) - 1  # the accepted guesses' keys and values are valid
            seq.draft = []
            for token in tokens:  # accepted guesses, then the token after them
                self._append(seq, token)
                if seq.finished is not None:
                    break

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
                      seq.first_token - seq.arrived, (len(seq.output) - 1) / decode_s if decode_s > 0 else 0.0,
                      seq.logprobs)


def _drafter(cfg: EngineConfig, draft: CausalLM | None):
    """The draft model that makes the speculative guesses, or None (prompt lookup makes them)."""
    if draft is None and not cfg.draft:
        return None
    from kb.rag.draft import DraftModel

    return DraftModel(cfg, draft)


def _same_tokenizer(tokenizer, folder: Path) -> None:
    """A draft's guesses are token ids: its vocabulary must be the target's."""
    if _tokenizer(folder).get_vocab() != tokenizer.get_vocab():
        raise UsageError(f"the draft model {folder} does not share the generator's tokenizer")


def _tokenizer(folder: Path):
    from kb.common import quiet_transformers

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

