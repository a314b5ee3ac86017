"""The OpenAI-compatible shapes of kb serve's /v1/chat/completions: its arguments checked, a whole
completion, and the chunks of a streamed one (server-sent `data:` lines ending in [DONE])."""

from __future__ import annotations

import time
import uuid

from kb.errors import UsageError

ROLES = ("system", "user", "assistant")


def chat_args(b: dict, limits) -> tuple[list[dict], int, float]:
    """(messages, max tokens, temperature) of a request body."""
    from kb.cli.serve.service import int_arg, number_arg

    messages = b.get("messages")
    if not isinstance(messages, list) or not messages:
        raise UsageError("messages must be a non-empty list")
    out, size = [], 0
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise UsageError(f"each message needs a role ({', '.join(ROLES)}) and a string content")
        size += len(m["content"])
        out.append({"role": m["role"], "content": m["content"]})
    if size > limits.max_text * 16:
        raise UsageError(f"the messages are longer than {limits.max_text * 16} characters")
    max_tokens = b.get("max_tokens", b.get("max_completion_tokens", 256))
    return (out, int_arg(max_tokens, "max_tokens", 1, limits.max_tokens),
            number_arg(b.get("temperature", 0.0), "temperature", 0.0, 2.0))


def _base(name: str, kind: str) -> dict:
    return {"id": "chatcmpl-" + uuid.uuid4().hex[:24], "object": kind, "created": int(time.time()), "model": name}


def completion(name: str, text: str, prompt: int, new: int, finish: str) -> dict:
    return {**_base(name, "chat.completion"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": new, "total_tokens": prompt + new}}


def chunk_events(name: str):
    """The `shape` of kb.cli.serve.http.events for a streamed completion."""
    base = _base(name, "chat.completion.chunk")

    def shape(kind: str, value):
        if kind == "text":
            return [("", {**base, "choices": [{"index": 0, "delta": {"content": value}, "finish_reason": None}]})]
        if kind == "error":
            return [("", value), ("", "[DONE]")]
        text, prompt, new, finish = value
        last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": new, "total_tokens": prompt + new}}
        return [("", last), ("", "[DONE]")]
    return shape
