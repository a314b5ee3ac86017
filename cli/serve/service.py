"""The warm kb behind `kb serve`: one store's searcher, its asker (the generator loads on the first
question) and the store's embedding model. Each lives on a worker thread of its own (a SQLite
connection and the engine belong to the thread that made them): a search never waits for an
answer being generated, and jobs of one kind run in order. Every request takes plain values,
checked against `Limits`, and returns the object the CLI prints with --json.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kb.errors import KbError, UsageError

MODES = ("bm25", "vector", "hybrid")


class Busy(KbError):
    """Too many requests are waiting for one worker: the client should try again later."""

    exit_code = 75


@dataclass(frozen=True)
class Limits:
    max_k: int = 100  # results or passages a request may ask for
    max_text: int = 4000  # characters of a query, a question, a message
    max_tokens: int = 2048  # new tokens an answer or completion may ask for
    max_inputs: int = 256  # texts of one embeddings request
    max_waiting: int = 32  # requests queued for one worker before the next is told to come back later
    max_body: int = 1 << 20  # bytes of a request body


class Worker:
    """One thread that owns what `make()` builds (on that thread, at its first job) and runs jobs
    one after another; at most `max_waiting` queued."""

    def __init__(self, name: str, make: Callable[[], object], max_waiting: int):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._make, self._state, self._max = make, None, max_waiting
        self._waiting = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable, *args) -> Future:
        with self._lock:
            if self._waiting >= self._max:
                raise Busy("the server is busy: too many requests are waiting; try again shortly")
            self._waiting += 1
        return self._pool.submit(self._run, fn, args)

    def _run(self, fn: Callable, args: tuple):
        try:
            if self._state is None:
                self._state = self._make()
            return fn(self._state, *args)
        finally:
            with self._lock:
                self._waiting -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def text_arg(value, name: str, limits: Limits) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{name} must be a non-empty string")
    if len(value) > limits.max_text:
        raise UsageError(f"{name} is longer than {limits.max_text} characters")
    return value


def int_arg(value, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UsageError(f"{name} must be a whole number from {low} to {high}")
    return value


def number_arg(value, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise UsageError(f"{name} must be a number from {low} to {high}")
    return float(value)


class Service:
    def __init__(self, db: Path | str | None, model: str | None = None, query_encoder: str = "auto",
                 limits: Limits = Limits(), draft: str | None = None):
        from kb.index.store import Store

        store = Store.open(db)  # fails here, before the server starts, if there is no store
        self.store_dir = store.dir
        store.close()
        self.model, self.limits = model, limits
        self._search = Worker("kb-search", lambda: _Searching(self.store_dir, query_encoder), limits.max_waiting)
        self._answer = Worker("kb-answer", lambda: _Answering(self.store_dir, model, draft),
                              limits.max_waiting)

    # -- each returns a Future of the CLI's JSON object ----------------------------------------
    def query(self, text, k=10, mode="hybrid", path=None) -> Future:
        text, k = text_arg(text, "query", self.limits), int_arg(k, "k", 1, self.limits.max_k)
        if mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)}")
        if path is not None and (not isinstance(path, str) or len(path) > self.limits.max_text):
            raise UsageError("path must be a glob string")
        return self._search.submit(_Searching.query, text, k, mode, path)

    def get(self, target) -> Future:
        return self._search.submit(_Searching.get, text_arg(target, "path", self.limits))

    def status(self) -> Future:
        return self._search.submit(_Searching.status)

    def documents(self, limit: int) -> Future:
        return self._search.submit(_Searching.documents, limit)

    def document(self, doc_id) -> Future:
        if not str(doc_id).isdigit():
            raise UsageError("a document id is a number")
        return self._search.submit(_Searching.document, int(doc_id))

    def embed(self, texts) -> Future:
        """(vectors as lists of floats, tokens read): texts embedded as passages are by `kb index`."""
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not 1 <= len(texts) <= self.limits.max_inputs:
            raise UsageError(f"input must be a string or a list of 1 to {self.limits.max_inputs} strings")
        texts = [text_arg(t, "input", self.limits) for t in texts]
        return self._search.submit(_Searching.embed, texts)

    def ask(self, question, k=6, max_tokens=256, temperature=0.0, on_text=None) -> Future:
        question = text_arg(question, "question", self.limits)
        k, max_tokens = int_arg(k, "k", 1, self.limits.max_k), int_arg(max_tokens, "max_tokens", 1, self.limits.max_tokens)
        temperature = number_arg(temperature, "temperature", 0.0, 2.0)
        return self._answer.submit(_Answering.ask, question, k, max_tokens, temperature, on_text)

    def chat(self, messages: list[dict], max_tokens: int, temperature: float, on_text=None) -> Future:
        """A chat completion on the generator: (text, prompt tokens, new tokens, finish reason)."""
        return self._answer.submit(_Answering.chat, messages, max_tokens, temperature, on_text)

    def close(self) -> None:
        self._search.close()
        self._answer.close()


class _Searching:
    """The search worker's state: its own connection to the store, a warm Searcher."""

    def __init__(self, store_dir: Path, query_encoder: str):
        from kb.index.search import Searcher, SearchConfig
        from kb.index.store import Store

        self.store = Store.open(store_dir)
        self.searcher = Searcher(self.store, SearchConfig(query_encoder=query_encoder))
        self._encoder = None

    def query(self, text: str, k: int, mode: str, path: str | None) -> dict:
        return self.searcher.search(text, k=k, mode=mode, path_glob=path).to_json()

    def get(self, target: str) -> dict:
        from kb.index.search.document import get

        return get(self.store, target).to_json()

    def status(self) -> dict:
        from kb.index.status import status

        return status(self.store)

    def documents(self, limit: int) -> list[tuple]:
        from kb.index.store import lookup

        return lookup.documents_page(self.store.conn, limit)

    def document(self, doc_id: int) -> dict:
        from kb.errors import NotFound
        from kb.index.store import lookup

        path = lookup.document_path(self.store.conn, doc_id)
        if path is None:
            raise NotFound(f"no indexed document has id {doc_id}")
        return self.get(path)

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        if self._encoder is None:
            from kb.embed import load_query_encoder
            from kb.embed.encoder import EmbedConfig

            meta = self.store.meta_json("embedding")
            if meta is None:
                raise UsageError("this store has no embedding model (indexed with --vector-index none)")
            self._encoder = load_query_encoder(EmbedConfig(**meta["config"]), self.searcher.cfg.query_encoder)
        ids = [self._encoder.tokenizer.encode(t).ids for t in texts]
        return self._encoder.embed_passages(ids).tolist(), sum(map(len, ids))


class _Answering:
    """The answer worker's state: its own connection, an Asker per (k, max tokens, temperature),
    all on one engine."""

    def __init__(self, store_dir: Path, model: str | None, draft: str | None):
        from kb.index.store import Store

        self.store, self.model, self.draft = Store.open(store_dir), model, draft
        self.askers: dict = {}

    def asker(self, k: int, max_tokens: int, temperature: float):
        from kb.rag.ask import AskConfig, Asker

        key = (k, max_tokens, temperature)
        if key not in self.askers:
            first = next(iter(self.askers.values()), None)  # one generator, whatever the settings
            self.askers[key] = Asker(self.store, AskConfig(model=self.model, draft=self.draft, k=k,
                                                           max_tokens=max_tokens, temperature=temperature),
                                     engine=first.engine if first is not None else None)
        return self.askers[key]

    def ask(self, question: str, k: int, max_tokens: int, temperature: float, on_text) -> dict:
        return self.asker(k, max_tokens, temperature).ask(question, on_text=on_text).to_json()

    def chat(self, messages: list[dict], max_tokens: int, temperature: float, on_text):
        from kb.rag.sampling import SamplingParams

        engine = self.asker(6, 256, 0.0).engine
        text = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = engine.tokenizer(text, add_special_tokens=False).input_ids
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature)
        for piece in engine.stream(ids, params):
            if on_text is not None:
                on_text(piece)
        out = engine.last_output
        return out.text, len(ids), len(out.token_ids), out.finish_reason
