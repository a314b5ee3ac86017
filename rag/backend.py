"""`kb ask --backend URL`: kb's retrieval, declining and citation checking, with the answer written
by an OpenAI-compatible server (vLLM, SGLang, llama.cpp, kb serve) instead of kb's own engine.

The request carries the same messages kb's engine reads (kb.rag.prompt.chat_messages: the system
prompt, then the numbered sources in retrieval order, then the question), so the bytes before the question are
the same for questions that retrieve the same sources and the server's own prefix cache hits.
Without the server's tokenizer, the sources are packed against a character estimate of tokens.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable

CONTEXT = 8192  # tokens assumed for the server's model when --context-tokens is not given
CHARS_PER_TOKEN = 3  # a cautious estimate for English and code (BPE vocabularies give 3.5-4.5)


def count(text: str) -> int:
    """Tokens `text` is taken to cost (rounded up)."""
    return -(-len(text) // CHARS_PER_TOKEN)


def render(msgs: list[dict]) -> str:
    """The prompt as an Answer's `prompt` shows it: the messages as JSON."""
    return json.dumps(msgs, ensure_ascii=False)


@dataclass
class Output:
    """What kb.rag.answer.answered reads of a generation."""

    text: str
    prompt_tokens: int
    cached_tokens: int
    ttft_s: float
    decode_tokens_per_s: float
    finish_reason: str
    new_tokens: int = 0  # the server's count (its token ids are not returned)


def generate(url: str, model: str | None, msgs: list[dict], max_tokens: int, temperature: float,
             on_text: Callable[[str], None] | None = None) -> Output:
    """One chat completion, streamed (so that time to first token is measured and `on_text`
    hears the answer as it grows)."""
    from kb import remote

    body = {"messages": msgs, "max_tokens": max_tokens, "temperature": temperature,
            "stream_options": {"include_usage": True}, **({"model": model} if model else {})}
    t0 = time.perf_counter()
    first, pieces, usage, finish = None, [], {}, "stop"
    for chunk in remote.stream(url, "/chat/completions", body):
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content") or ""
            if piece:
                first = first if first is not None else time.perf_counter() - t0
                pieces.append(piece)
                if on_text is not None:
                    on_text(piece)
            finish = choice.get("finish_reason") or finish
    total = time.perf_counter() - t0
    new = usage.get("completion_tokens") or len(pieces)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    first = first if first is not None else total
    return Output("".join(pieces), usage.get("prompt_tokens") or 0, cached, first,
                  (new - 1) / (total - first) if new > 1 and total > first else 0.0, finish, new)
