"""Grounded answers: retrieve passages with the hybrid query, give them to a local model as
numbered sources, and answer through kb's generator, whose prefix cache is kept under the store.

The prompt is laid out so that what repeats comes first and stays byte-identical: the model's
chat template with a fixed system prompt, then the sources in an order that depends only on the
retrieval (best first, ties by path and line), then the question. Questions that retrieve the same sources share everything
before the question, and a later process reads those KV blocks back from disk
(`<store>/kv/`), so a repeated or related question skips most of its prefill.

Sources are quoted (kb.rag.prompt): no document or path can close its own source, open another
or ask a question of its own.

When the best passage scores below `min_score`, kb declines without asking the model: small
models answer from their own guesses otherwise. The threshold is calibrated on collections of 1,
3, 30, 38 and 10,000 documents (`python bench/ask.py --only decline --big 10000`, README); in a
small store the vectors' background is topped up with generic passages (kb.index.background) so
that the score means the same from one document up.
"""

from __future__ import annotations

import errno

import time
from dataclasses import dataclass, field, replace
from typing import Callable

from kb.errors import UsageError
from kb.rag.cite import check, model_citations
from kb.rag.prompt import SYSTEM_PROMPT, source_block, user_message

from kb.rag.models import DEFAULT as DEFAULT_MODEL

DECLINED = "The indexed documents have nothing relevant to this question."
# The best hybrid score below which kb declines (calibrated fusion's scale; README, kb ask).
MIN_SCORE = 0.25
SOURCE_FLOOR = 0.5  # passages scoring under this share of MIN_SCORE are noise: not given to the model


@dataclass(frozen=True)
class AskConfig:
    model: str | None = None  # a catalogue name or a local folder; None: DEFAULT_MODEL
    k: int = 6  # passages retrieved at most
    max_tokens: int = 256
    temperature: float = 0.0
    context_tokens: int = 0  # prompt budget; 0: the model's positions minus the answer's budget
    system: str = SYSTEM_PROMPT
    min_score: float = MIN_SCORE
    device: str = "auto"
    cache_bytes: int = 1 << 30  # cap of the KV blocks kept on disk under the store


@dataclass
class Source:
    n: int
    path: str
    start_line: int
    end_line: int
    score: float
    text: str
    chunk_ids: list[int]  # the passages it is made of

    def to_json(self) -> dict:
        return {"n": self.n, "path": self.path, "start_line": self.start_line, "end_line": self.end_line,
                "score": round(self.score, 4)}


@dataclass
class Prepared:
    question: str
    sources: list[Source]
    prompt: str = ""
    ids: list[int] = field(default_factory=list)
    retrieval_ms: float = 0.0
    declined: bool = False


@dataclass
class Answer:
    question: str
    answer: str
    sources: list[Source]
    cited: list[int]
    model: str
    prompt: str
    prompt_token_ids: list[int]
    stats: dict
    declined: bool = False
    model_cited: list[int] = field(default_factory=list)  # the model's own [n] markers, unchecked

    def to_json(self) -> dict:
        return {"question": self.question, "answer": self.answer, "sources": [s.to_json() for s in self.sources],
                "cited": self.cited, "model_cited": self.model_cited, "declined": self.declined, "model": self.model, "prompt": self.prompt,
                "prompt_token_ids": self.prompt_token_ids, "stats": self.stats}


class Asker:
    def __init__(self, store, cfg: AskConfig = AskConfig()):
        from kb.index.query import Searcher
        from kb.rag.models import resolve

        if cfg.k < 1 or cfg.max_tokens < 1:
            raise UsageError("-k and --max-tokens must be at least 1")
        self.store, self.cfg = store, cfg
        self.folder = resolve(cfg.model or DEFAULT_MODEL)
        self.searcher = Searcher(store)
        self._engine = None

    @property
    def engine(self):
        """The generator, loaded on first use (a question that is declined never loads it)."""
        if self._engine is None:
            from kb.rag.engine import Engine, EngineConfig

            self._engine = Engine(EngineConfig(model=str(self.folder), device=self.cfg.device,
                                               disk_cache=str(self.store.path("kv")),
                                               disk_cache_bytes=self.cfg.cache_bytes))
            if self._engine.tokenizer.chat_template is None:
                raise UsageError(f"{self.folder} has no chat template: kb ask needs an instruction-tuned model")
        return self._engine

    # -- prompt ---------------------------------------------------------------------------------
    def retrieve(self, question: str) -> tuple[Prepared, list]:
        """The question's passages, best first, and whether kb declines it; needs no generator."""
        question = " ".join(question.split())
        if not question:
            raise UsageError("empty question")
        t0 = time.perf_counter()
        hits = self.searcher.search(question, k=self.cfg.k).results
        out = Prepared(question, [], retrieval_ms=(time.perf_counter() - t0) * 1000)
        out.declined = not relevant(hits, self.cfg.min_score)
        return out, hits

    def prepare(self, question: str) -> Prepared:
        out, hits = self.retrieve(question)
        if out.declined:
            return out
        question = out.question
        tok = self.engine.tokenizer
        budget = self.cfg.context_tokens or (self.engine.model.cfg.max_positions - self.cfg.max_tokens)
        fixed = len(self._encode(self._render([], question)))
        chosen, used = [], fixed
        floor = self.cfg.min_score * SOURCE_FLOOR
        for h in (h for h in hits if h.score >= floor):  # best first, while they fit
            cost = len(tok(source_block(0, h.path, h.start_line, h.end_line, h.text),
                           add_special_tokens=False).input_ids)
            if used + cost > budget:
                continue
            chosen.append(h)
            used += cost
        if not chosen:
            raise UsageError(f"--context-tokens {budget} leaves no room for one source")
        # Neighbouring passages are joined in (path, line) order, then the sources go best first:
        # a small model leans on the first source. The order is a function of the retrieval, so a
        # question asked again has the same prompt, and its KV comes back from the prefix cache.
        chosen.sort(key=lambda h: (h.path, h.start_line))
        merged = sorted(_merge(chosen), key=lambda s: (-s.score, s.path, s.start_line))
        out.sources = [replace(s, n=n) for n, s in enumerate(merged, 1)]
        out.prompt = self._render(out.sources, question)
        out.ids = self._encode(out.prompt)
        return out

    def _render(self, sources: list[Source], question: str) -> str:
        user = user_message([(s.n, s.path, s.start_line, s.end_line, s.text) for s in sources], question)
        messages = [{"role": "system", "content": self.cfg.system}, {"role": "user", "content": user}]
        return self.engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _encode(self, text: str) -> list[int]:
        return self.engine.tokenizer(text, add_special_tokens=False).input_ids

    # -- answering ------------------------------------------------------------------------------
    def ask(self, question: str, on_text: Callable[[str], None] | None = None) -> Answer:
        """One question; `on_text` receives the answer's text as it grows."""
        p = self.prepare(question)
        if p.declined:
            return self._declined(p)
        output = None
        if on_text is None:
            output = self.engine.generate([p.ids], self._params())[0]
        else:
            for piece in self.engine.stream(p.ids, self._params()):
                on_text(piece)
            output = self.engine.last_output
        self._persist([(p, output.token_ids)])
        return self._answer(p, output)

    def ask_many(self, questions: list[str]) -> list[Answer]:
        """All questions in one engine run: shared sources are computed once."""
        prepared = [self.prepare(q) for q in questions]
        live = [p for p in prepared if not p.declined]
        outputs = self.engine.generate([p.ids for p in live], self._params()) if live else []
        by_id = dict(zip(map(id, live), outputs))
        answers = [self._declined(p) if p.declined else self._answer(p, by_id[id(p)]) for p in prepared]
        if live:
            self._persist([(p, by_id[id(p)].token_ids) for p in live])
        return answers

    def _params(self):
        from kb.rag.sampling import SamplingParams

        return SamplingParams(max_tokens=self.cfg.max_tokens, temperature=self.cfg.temperature)

    def _answer(self, p: Prepared, out) -> Answer:
        text = out.text.strip()
        cited = check(text, [s.text for s in p.sources])
        stats = {"prompt_tokens": out.prompt_tokens, "cached_tokens": out.cached_tokens,
                 "new_tokens": len(out.token_ids), "retrieval_ms": round(p.retrieval_ms, 2),
                 "ttft_ms": round(out.ttft_s * 1000, 2), "decode_tokens_per_s": round(out.decode_tokens_per_s, 2)}
        return Answer(p.question, text, p.sources, cited, str(self.folder), p.prompt, p.ids, stats,
                      model_cited=model_citations(text, len(p.sources)))

    def _declined(self, p: Prepared) -> Answer:
        stats = {"prompt_tokens": 0, "cached_tokens": 0, "new_tokens": 0, "retrieval_ms": round(p.retrieval_ms, 2),
                 "ttft_ms": 0.0, "decode_tokens_per_s": 0.0}
        return Answer(p.question, DECLINED, [], [], str(self.folder), "", [], stats, declined=True)

    def _persist(self, done: list[tuple[Prepared, list[int]]]) -> None:
        """Keep the prefix cache on disk, and remember which chunks each block's prefix holds (so
        that `kb index` can drop blocks of chunks that are gone)."""
        from kb.rag.kv_sources import record_sources

        if self.store.readonly:
            return  # a store that takes no writes (a backup, a full disk) answers without keeping its cache
        try:
            self.engine.persist()
            record_sources(self.engine.radix.disk.folder, self.engine.pool.block_size,
                           [(p.ids + out, self._spans(p)) for p, out in done])
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
                raise  # the cache is only a cache: a disk that fills or refuses writes costs it, not the answer

    def _spans(self, p: Prepared) -> list[tuple[int, int]]:
        """(first token of a source in the prompt, a chunk id of it), for each source's chunks."""
        out = []
        for s in p.sources:
            head = p.prompt[:p.prompt.index(source_block(s.n, s.path, s.start_line, s.end_line, s.text))]
            out += [(len(self._encode(head)), c) for c in s.chunk_ids]
        return out


def relevant(hits, min_score: float = MIN_SCORE) -> bool:
    """Whether a search's hits (best first) are worth giving the model: the best scores at least
    `min_score`. The scale holds from a one-document store up (the vectors' background is topped up
    with generic passages in small stores, kb.index.background; README, kb ask)."""
    return bool(hits) and hits[0].score >= min_score


def _merge(hits) -> list[Source]:
    """Sources from hits in (path, line) order, neighbouring passages of a file joined into one
    (the model reads the section whole; one citation number for it)."""
    out: list[Source] = []
    for h in hits:
        last = out[-1] if out else None
        if last is not None and last.path == h.path and h.start_line <= last.end_line + 2:
            last.text, last.end_line = last.text.rstrip() + "\n\n" + h.text.strip(), max(last.end_line, h.end_line)
            last.score, last.chunk_ids = max(last.score, h.score), last.chunk_ids + [h.chunk_id]
            continue
        out.append(Source(len(out) + 1, h.path, h.start_line, h.end_line, h.score, h.text, [h.chunk_id]))
    return out

