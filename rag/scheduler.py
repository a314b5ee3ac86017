"""Which sequences run in the next step, and with how many tokens each.

Continuous batching: every step takes each running sequence's next token (decode), continues
prefills in chunks, and admits waiting requests while the step's token budget and the free
blocks last, so prefill and decode share a forward and a long prompt never needs blocks for all
of it at once. Waiting requests are ordered by the longest prefix the cache holds for them, and a
request that shares an uncached prefix with one being prefilled waits until that prefill has
been inserted into the cache, then reuses it (as SGLang's scheduler does). When blocks run out,
leaves of the prefix cache are evicted; if that is not enough, the most recently admitted
sequence is preempted: its blocks are released and it is recomputed later (mostly from the
prefix cache, which keeps what it had inserted).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import torch

from kb.rag.kv_cache import BlockPool, OutOfBlocks
from kb.rag.prefix_cache import PrefixCache
from kb.rag.sampling import SamplingParams
from kb.rag.speculate import Lookup, eligible


@dataclass(eq=False)
class Sequence:
    id: int
    tokens: list[int]  # prompt, then generated tokens
    prompt_len: int
    params: SamplingParams
    blocks: list[int] = field(default_factory=list)
    computed: int = 0  # tokens whose keys and values are in `blocks`
    cached: int = 0  # prompt tokens that came from the prefix cache
    generator: torch.Generator | None = None
    arrived: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    finished: float | None = None
    finish_reason: str | None = None
    text: str = ""  # decoded when needed: stop strings, streaming, the end
    streamed: bool = False
    preemptions: int = 0
    logprobs: list[float] | None = None  # of `params.logprobs_of`, at the first sampled position
    draft: list[int] = field(default_factory=list)  # this step's guessed next tokens (kb.rag.speculate)
    lookup: Lookup | None = None  # made on its first speculative step

    @property
    def output(self) -> list[int]:
        return self.tokens[self.prompt_len:]


class Scheduler:
    def __init__(self, pool: BlockPool, cache: PrefixCache, token_budget: int, max_seqs: int, speculate: int = 0,
                 share_limit: int | None = None, long_chunk: int = 0, drafter=None):
        self.pool, self.cache = pool, cache
        self.token_budget, self.max_seqs = token_budget, max_seqs
        # a lone sequence (nothing else running or waiting) prefills up to `long_chunk` tokens a
        # step: its bigger chunks stall no one (0: the token budget)
        self.long_chunk = max(long_chunk, token_budget)
        self.speculate = speculate  # guessed tokens checked per decode step at most (0: none)
        self.drafter = drafter  # a kb.rag.draft.DraftModel guesses them, else prompt lookup
        # Dynamic NTK scaling rotates a token by its sequence's length once that passes the trained
        # context (`share_limit`): only keys before it, of prompts within it, are alike in every
        # sequence and go to the prefix cache; a longer prompt reuses nothing.
        self.share_limit = share_limit
        self.waiting: deque[Sequence] = deque()
        # oldest first; a dict for its order and O(1) membership (as a list, a step of 500
        # sequences asked it "still running?" 1,000 times: 3 to 13 ms a step on the 2-core CPU)
        self.running: dict[Sequence, None] = {}

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> list[tuple[Sequence, int]]:
        """[(sequence, new tokens)] for the next step; blocks for them are allocated."""
        plan: list[tuple[Sequence, int]] = []
        budget = total = self.long_chunk if len(self.running) + len(self.waiting) == 1 else self.token_budget
        for seq in list(self.running):  # decodes first, then unfinished prefills, oldest first
            if seq not in self.running:
                continue  # preempted while making room for an earlier one
            n = min(len(seq.tokens) - seq.computed, budget)
            seq.draft = self._draft(seq, budget) if n == 1 else []
            n += len(seq.draft)
            if n <= 0 or not self._grow(seq, seq.computed + n):
                seq.draft = []
                continue
            plan.append((seq, n))
            budget -= n
        plan = [(s, n) for s, n in plan if s in self.running]
        budget = total - sum(n for _, n in plan)
        hits = self._order_waiting()
        windows: dict[int, set] = {}
        admitted: set[Sequence] = set()
        for seq in self.waiting:
            if budget <= 0 or len(self.running) >= self.max_seqs:
                break
            if self._shares_pending_prefill(seq, hits[seq.id], windows):
                continue  # admitted once that prefill is in the cache
            self._admit(seq)
            n = min(len(seq.tokens) - seq.computed, budget)
            if not self._grow(seq, seq.computed + n, preempt=False):
                self._release(seq)
                break
            admitted.add(seq)
            self.running[seq] = None
            plan.append((seq, n))
            budget -= n
            for at, seen in windows.items():  # it is now a running prefill others may wait for
                if (key := self._window(seq, at)) is not None:
                    seen.add(key)
        if admitted:
            self.waiting = deque(s for s in self.waiting if s not in admitted)
        return plan

    def _draft(self, seq: Sequence, budget: int) -> list[int]:
        """Guessed tokens for a decoding sequence to check in this step (none unless speculating)."""
        left = seq.params.max_tokens - len(seq.output) - 1  # the step adds one token besides them
        if not self.speculate or seq.computed < seq.prompt_len or not eligible(seq.params) or left <= 0:
            return []
        k = min(self.speculate, left, budget - 1)
        if self.drafter is not None:
            return self.drafter.propose(seq, k)
        if seq.lookup is None:
            seq.lookup = Lookup()
        return seq.lookup.propose(seq.tokens, k)

    def finish(self, seq: Sequence) -> None:
        """Remember the finished sequence's KV in the prefix cache and release its blocks."""
        if seq.computed > seq.prompt_len:  # else `prefilled` has inserted all of it
            self._insert(seq, seq.computed)
        del self.running[seq]
        self._release(seq)
        if self.drafter is not None:
            self.drafter.forget(seq)

    def reserve(self, seqs: list[Sequence]) -> bool:
        """A block for the token after each decoding sequence's next one (a step queued ahead:
        kb.rag.ahead), evicting from the prefix cache but preempting no one; False if one lacks it."""
        return all(self._grow(s, s.computed + 2, preempt=False) for s in seqs)

    def prefilled(self, seq: Sequence) -> None:
        """The prompt is computed: insert it so that requests sharing it reuse it."""
        self._insert(seq, seq.prompt_len)

    # -- internals ------------------------------------------------------------------------------
    def _order_waiting(self) -> dict[int, int]:
        """Sort the waiting queue, longest cached prefix first, sharers together; returns each
        waiting sequence's cached prefix length, by id (none needed for a lone request that no
        running prefill can share with)."""
        if len(self.waiting) == 1 and all(s.computed >= s.prompt_len for s in self.running):
            return {self.waiting[0].id: 0}
        hits = {s.id: self.cache.cached(s.tokens) for s in self.waiting}
        if len(self.waiting) > 1:
            self.waiting = deque(sorted(self.waiting, key=lambda s: (-hits[s.id], s.tokens[:64], s.arrived)))
        return hits

    def _shares_pending_prefill(self, seq: Sequence, cached: int, windows: dict) -> bool:
        """True if a running prefill is computing at least two more blocks of `seq`'s prompt than
        the cache holds for it: the tokens just past `seq`'s cached prefix (two blocks of them)
        are those of a prompt being prefilled at the same position. `windows` caches, per
        position, the running prefills' tokens there, within one `schedule`."""
        key = self._window(seq, cached)
        if key is None:
            return False
        if cached not in windows:
            windows[cached] = {w for o in self.running if (w := self._window(o, cached)) is not None}
        return key in windows[cached]

    def _window(self, seq: Sequence, at: int) -> tuple[int, ...] | None:
        """The two blocks of `seq`'s prompt from position `at`, if its prompt is still to be
        computed there (a waiting sequence, or a running prefill) and reaches that far."""
        span = 2 * self.pool.block_size
        if not self._shareable(seq):
            return None
        if seq.computed < seq.prompt_len and seq.prompt_len >= at + span:
            return tuple(seq.tokens[at:at + span])
        return None

    def _shareable(self, seq: Sequence) -> int:
        """How many of `seq`'s leading tokens have keys alike in every sequence (see `share_limit`):
        all without a limit; up to it for a prompt within it; none for a longer prompt, whose keys
        are all rotated for its own length."""
        if self.share_limit is None:
            return len(seq.tokens)
        return 0 if seq.prompt_len > self.share_limit else self.share_limit

    def _insert(self, seq: Sequence, n: int) -> None:
        """The first n tokens' KV into the prefix cache (those of them others may reuse)."""
        n = min(n, self._shareable(seq))
        if n:
            self.cache.insert_prefix(seq.tokens[:n], seq.blocks)

    def _admit(self, seq: Sequence) -> None:
        if not self._shareable(seq):
            return  # nothing cached is alike
        match = self.cache.match_prefix(seq.tokens[:len(seq.tokens) - 1])  # at least one token is computed
        seq.blocks, seq.computed = match.blocks, match.cached
        seq.cached = max(seq.cached, min(match.cached, seq.prompt_len))

    def _grow(self, seq: Sequence, tokens: int, preempt: bool = True) -> bool:
        """Allocate blocks until `seq` can hold `tokens`; evict, then preempt, when none is free."""
        while len(seq.blocks) * self.pool.block_size < tokens:
            try:
                seq.blocks.append(self.pool.allocate())
                continue
            except OutOfBlocks:
                pass
            if self.cache.evict(1):
                continue
            victim = next(reversed(self.running)) if preempt and self.running else None
            if victim is None or victim is seq:
                return False
            self._preempt(victim)
        return True

    def _preempt(self, seq: Sequence) -> None:
        del self.running[seq]
        self._insert(seq, seq.computed)  # recomputed from here if it stays
        self._release(seq)
        seq.computed, seq.preemptions, seq.draft = 0, seq.preemptions + 1, []
        self.waiting.appendleft(seq)

    def _release(self, seq: Sequence) -> None:
        for block in seq.blocks:
            self.pool.release(block)
        seq.blocks = []
