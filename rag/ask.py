"""Grounded answers: retrieve passages with the hybrid query, give them to a local model as
numbered sources, and answer through kb's generator, whose prefix cache is kept under the store.

The flow of one question: search (kb.index.search) -> decline or pack the sources
(kb.rag.sources) -> the prompt (kb.rag.prompt) -> the generator (kb.rag.engine) -> the answer
with its citations checked (kb.rag.answer, kb.rag.cite) -> the KV blocks kept on disk with the
chunks they came from (kb.rag.provenance). `Asker` holds the searcher and the engine across
questions; the engine loads on first use, so a question that is declined never loads it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable

from kb.errors import UsageError
from kb.index.store.kv import KV_DIR
from kb.rag import backend, provenance
from kb.rag.answer import Answer, Prepared, answered, declined
from kb.rag.catalog import DEFAULT as DEFAULT_MODEL
from kb.rag.prompt import SYSTEM_PROMPT, chat_messages, chat_prompt, source_block
from kb.rag.sources import MIN_SCORE, SOURCE_FLOOR, pack, relevant


DRAFT_GUESSES = 4  # a draft model's guesses per step (bench/speculate.py --draft)


@dataclass(frozen=True)
class AskConfig:
    model: str | None = None  # a catalogue name or a local folder; None: DEFAULT_MODEL
    draft: str | None = None  # a smaller model of the same tokenizer that guesses for it (kb.rag.draft)
    k: int = 6  # passages retrieved at most
    max_tokens: int = 256
    temperature: float = 0.0
    context_tokens: int = 0  # prompt budget; 0: the model's positions minus the answer's budget
    system: str = SYSTEM_PROMPT
    min_score: float = MIN_SCORE
    source_floor: float = SOURCE_FLOOR  # passages under this share of min_score are not given to the model
    # decline too when the model judges none of the 3 best passages relevant with this probability
    # (kb.rag.rerank's judgement, on the generator itself; 0: off)
    judge_floor: float = 0.0
    device: str = "auto"
    cache_bytes: int = 1 << 30  # cap of the KV blocks kept on disk under the store
    collections: tuple[str, ...] = ()  # search only these (kb.index.collections; -c NAME)
    # guessed tokens per decode step; None: with a draft, DRAFT_GUESSES; by prompt lookup
    # (kb.rag.speculate), 8 on the CPU, where it paid (bench/speculate.py), 0 on a GPU, where guesses
    # leave the CUDA graphs
    speculate: int | None = None
    backend: str | None = None  # an OpenAI-compatible server's URL writes the answer (kb.rag.backend)
    backend_model: str | None = None  # the model name sent to it (None: the server's default)


def _collections(store, names: tuple[str, ...]):
    """(the search scope of `names`, folder -> context of every collection that has one)."""
    from kb.index import collections
    from kb.index.search import Scope

    chosen = collections.pick(store, list(names)) if names else []
    contexts = {c.root: c.context for c in collections.load(store).values() if c.context}
    return Scope(roots=tuple(c.root for c in chosen)), contexts


class Asker:
    def __init__(self, store, cfg: AskConfig = AskConfig(), engine=None):
        """`engine`: a generator already loaded (of the same model) to answer with, or None."""
        from kb.index.search import Searcher
        from kb.rag.catalog import resolve

        if cfg.k < 1 or cfg.max_tokens < 1:
            raise UsageError("-k and --max-tokens must be at least 1")
        self.store, self.cfg = store, cfg
        self.folder = f"{cfg.backend_model or 'default'} at {cfg.backend}" if cfg.backend else resolve(
            cfg.model or DEFAULT_MODEL)
        if cfg.draft and cfg.backend:
            raise UsageError("--draft guesses for kb's own generator, not for a --backend server")
        self.draft = resolve(cfg.draft) if cfg.draft else None
        self.searcher = Searcher(store)
        self.scope, self.contexts = _collections(store, cfg.collections)
        self._engine = engine
        self._judge = None  # kb.rag.rerank.Reranker on the same engine, made on first use (judge_floor)

    @property
    def engine(self):
        """The generator, loaded on first use (a question that is declined never loads it)."""
        if self._engine is None:
            from kb.rag.engine import Engine, EngineConfig

            draft = str(self.draft) if self.draft else None
            self._engine = Engine(EngineConfig(model=str(self.folder), device=self.cfg.device,
                                               disk_cache=str(self.store.path(KV_DIR)), draft=draft,
                                               disk_cache_bytes=self.cfg.cache_bytes, speculate=self._speculate()))
            if self._engine.tokenizer.chat_template is None:
                raise UsageError(f"{self.folder} has no chat template: kb ask needs an instruction-tuned model")
        return self._engine

    def retrieve(self, question: str) -> tuple[Prepared, list]:
        """The question's passages, best first, and whether kb declines it; needs no generator."""
        question = " ".join(question.split())
        if not question:
            raise UsageError("empty question")
        t0 = time.perf_counter()
        hits = self.searcher.search(question, k=self.cfg.k, scope=self.scope).results
        out = Prepared(question, [], retrieval_ms=(time.perf_counter() - t0) * 1000)
        out.declined = not relevant(hits, self.cfg.min_score)
        return out, hits

    def prepare(self, question: str) -> Prepared:
        """`retrieve`, then the sources that fit the prompt budget and the prompt's token ids."""
        out, hits = self.retrieve(question)
        if out.declined or (self.cfg.judge_floor > 0 and self._judged(out.question, hits) < self.cfg.judge_floor):
            out.declined = True
            return out
        budget = self.cfg.context_tokens or (self._positions() - self.cfg.max_tokens)
        fixed = self._count(self._prompt([], out.question))
        cost = lambda h: self._count(source_block(0, h.path, h.start_line, h.end_line, h.text,  # noqa: E731
                                                  self.contexts.get(h.root, "")))
        sources = pack(hits, cost, budget, fixed, self.cfg.min_score * self.cfg.source_floor)
        out.sources = [replace(s, context=self.contexts.get(s.root, "")) for s in sources]
        out.prompt = self._prompt(out.sources, out.question)
        out.ids = [] if self.cfg.backend else self._encode(out.prompt)
        return out

    def ask(self, question: str, on_text: Callable[[str], None] | None = None) -> Answer:
        """One question; `on_text` receives the answer's text as it grows."""
        p = self.prepare(question)
        if p.declined:
            return declined(p, str(self.folder))
        if self.cfg.backend:
            return answered(p, self._remote(p, on_text), str(self.folder))
        if on_text is None:
            output = self.engine.generate([p.ids], self._params())[0]
        else:
            for piece in self.engine.stream(p.ids, self._params()):
                on_text(piece)
            output = self.engine.last_output
        self._keep([(p, output.token_ids)])
        return answered(p, output, str(self.folder))

    def ask_many(self, questions: list[str]) -> list[Answer]:
        """All questions in one engine run: shared sources are computed once."""
        if self.cfg.backend:  # one request each: the server batches them itself
            return [self.ask(q) for q in questions]
        prepared = [self.prepare(q) for q in questions]
        live = [p for p in prepared if not p.declined]
        outputs = self.engine.generate([p.ids for p in live], self._params()) if live else []
        by_id = dict(zip(map(id, live), outputs))
        model = str(self.folder)
        answers = [declined(p, model) if p.declined else answered(p, by_id[id(p)], model) for p in prepared]
        if live:
            self._keep([(p, by_id[id(p)].token_ids) for p in live])
        return answers

    def _judged(self, question: str, hits) -> float:
        """The highest probability the generator gives that one of the 3 best passages is relevant."""
        if self._judge is None:
            from kb.rag.rerank import Reranker, RerankConfig

            self._judge = Reranker(self.store, RerankConfig(model=str(self.folder)), engine=self.engine)
        return max(self._judge.relevance(question, hits[:3]))

    def _prompt(self, sources, question: str) -> str:
        if self.cfg.backend:
            return backend.render(self._messages(sources, question))
        return chat_prompt(self.engine.tokenizer, self.cfg.system, sources, question)

    def _messages(self, sources, question: str) -> list[dict]:
        return chat_messages(self.cfg.system, sources, question)

    def _remote(self, p: Prepared, on_text):
        return backend.generate(self.cfg.backend, self.cfg.backend_model, self._messages(p.sources, p.question),
                                self.cfg.max_tokens, self.cfg.temperature, on_text)

    def _count(self, text: str) -> int:
        return backend.count(text) if self.cfg.backend else len(self._encode(text))

    def _positions(self) -> int:
        return backend.CONTEXT if self.cfg.backend else self.engine.model.cfg.max_positions

    def _encode(self, text: str) -> list[int]:
        return self.engine.tokenizer(text, add_special_tokens=False).input_ids

    def _speculate(self) -> int:
        import torch

        if self.cfg.speculate is not None:
            return self.cfg.speculate
        if self.cfg.draft:
            return DRAFT_GUESSES
        on_gpu = self.cfg.device != "cpu" and torch.cuda.is_available()
        return 0 if on_gpu else 8

    def _params(self):
        from kb.rag.sampling import SamplingParams

        return SamplingParams(max_tokens=self.cfg.max_tokens, temperature=self.cfg.temperature)

    def _keep(self, done: list[tuple[Prepared, list[int]]]) -> None:
        """The prefix cache on disk, with the chunks of each answered prompt (kb.rag.provenance);
        a store that takes no writes (a backup, a full disk) answers without keeping its cache."""
        if self.store.readonly or self.cfg.backend:
            return
        provenance.keep(self.engine, [(p.ids + out, provenance.spans(p.prompt, p.sources, self._encode))
                                      for p, out in done])
