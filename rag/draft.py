"""Draft-model speculation: a smaller model that shares the target's tokenizer guesses the next
k tokens greedily, one small forward each, and the target checks them all in one forward (the
verification prompt lookup uses, kb.rag.speculate, so greedy output is token for token plain
decoding's). It guesses where prompt lookup cannot: text that no source holds.

The draft keeps its own paged KV pool and, per sequence it guesses for, a sequence of its own
(a shadow) whose keys cover what it has read: a guess costs catching up on the tokens the target
gained since the last one (its accepted guesses need none) and k - 1 decode steps. The keys of
rejected guesses are overwritten, never read.

    engine = Engine(EngineConfig(model=big, draft=small, speculate=4))
"""

from __future__ import annotations

from dataclasses import replace

from kb.rag.config import EngineConfig
from kb.rag.decoder import CausalLM
from kb.rag.kv_cache import CacheConfig, OutOfBlocks
from kb.rag.runner import ModelRunner
from kb.rag.sampling import SamplingParams
from kb.rag.scheduler import Sequence

GREEDY = SamplingParams(max_tokens=1 << 30)


def draft_cache(cache: CacheConfig) -> CacheConfig:
    """The draft's pool: as many blocks as the target's where that is a number; else a tenth of
    the GPU's free memory (the draft loads first, the target's pool takes most of what is left)
    or a quarter of the target's CPU bytes."""
    if cache.num_blocks is not None:
        return cache
    return replace(cache, memory_fraction=0.1, cpu_bytes=cache.cpu_bytes // 4)


class DraftModel:
    def __init__(self, cfg: EngineConfig, model: CausalLM | None = None):
        """`cfg`: the target's configuration, whose `draft` names the draft's folder; `model`: an
        already built draft (tests, benchmarks) instead of loading it."""
        dcfg = replace(cfg, model=cfg.draft or "(draft)", draft=None, cache=draft_cache(cfg.cache), speculate=0)
        self.runner = ModelRunner(dcfg, model)
        self.shadows: dict[int, Sequence] = {}
        self.vocab = self.runner.model.cfg.vocab_size  # the target narrows it (`limit`)

    def limit(self, target_vocab: int) -> None:
        """Guesses are cut before the first id the target's vocabulary lacks."""
        self.vocab = min(self.vocab, target_vocab)

    def propose(self, seq: Sequence, k: int) -> list[int]:
        """Up to `k` greedy guesses of the draft after `seq.tokens` (none where its pool or its
        positions run out: the step then decodes plainly)."""
        if k <= 0 or len(seq.tokens) + k > self.runner.model.cfg.max_positions:
            return []
        shadow = self._shadow(seq)
        if not self._grow(shadow, len(seq.tokens) + k - 1):
            self.forget(seq)
            return []
        guesses: list[int] = []
        while len(guesses) < k:
            n = min(len(shadow.tokens) - shadow.computed, self.runner.token_budget)
            sampled = self.runner.run([(shadow, n)])
            shadow.computed += n
            if sampled:  # the step reached the shadow's last token
                guesses.append(sampled[0][1][0])
                if len(guesses) < k:
                    shadow.tokens.append(guesses[-1])
        cut = next((i for i, t in enumerate(guesses) if t >= self.vocab), k)
        return guesses[:cut]

    def forget(self, seq: Sequence) -> None:
        """Release the shadow of a sequence that has finished."""
        shadow = self.shadows.pop(seq.id, None)
        if shadow is not None:
            for block in shadow.blocks:
                self.runner.pool.release(block)

    def _shadow(self, seq: Sequence) -> Sequence:
        """`seq`'s shadow, its tokens set to `seq`'s and its computed count to the longest prefix
        whose keys it holds: the real tokens it read last time (its `prompt_len`), then the
        guesses it read that the target accepted, in order."""
        shadow = self.shadows.get(seq.id)
        if shadow is None:
            shadow = self.shadows[seq.id] = Sequence(seq.id, [], 0, GREEDY)
        keep = shadow.prompt_len
        while keep < shadow.computed and keep < len(seq.tokens) and shadow.tokens[keep] == seq.tokens[keep]:
            keep += 1
        shadow.tokens, shadow.prompt_len = list(seq.tokens), len(seq.tokens)
        shadow.computed = min(keep, len(seq.tokens) - 1)  # the last token is read to guess after it
        return shadow

    def _grow(self, shadow: Sequence, tokens: int) -> bool:
        pool = self.runner.pool
        while len(shadow.blocks) * pool.block_size < tokens:
            try:
                shadow.blocks.append(pool.allocate())
            except OutOfBlocks:
                return False
        return True
