"""kb's HTTP API (Starlette, served by uvicorn): the CLI's --json objects over HTTP, and OpenAI-
compatible embeddings and chat completions on kb's own engines.

    GET  /status                   kb status --json
    POST /query   {query, k, mode, path}          kb query --json
    POST /get     {path}                          kb get --json (PATH, PATH:LINE or PATH:A-B)
    POST /ask     {question, k, max_tokens, temperature, stream}
                  kb ask --json; with "stream": true, server-sent events: `text` {"text"} as the
                  answer grows, then `answer` (the whole JSON object), or `error`
    POST /v1/embeddings        {input, model}                     (OpenAI's shape)
    POST /v1/chat/completions  {messages, max_tokens, temperature, stream}
    GET  /v1/models

Every error is one JSON object, {"error": {"message", "type", "code"}}, with a status code: 400 bad
input, 401 no or wrong token, 403 a Host or Origin not allowed, 404 not found, 409 the store
cannot answer that, 413 a body over the limit, 503 busy (try again), 500 anything else. The
checks in front of every route, MCP's included, are kb.cli.serve.guard's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Mount, Route

from kb.cli.serve.guard import error_json
from kb.cli.serve.service import Service
from kb.errors import UsageError

STATUS = {2: 400, 3: 404, 4: 409, 73: 503, 74: 503, 75: 503}


def error_response(e: Exception) -> JSONResponse:
    """The one-line message and status of an exception (the CLI's error map, without `error: `)."""
    from kb.cli.app import explain

    line, code = explain(e)
    status = STATUS.get(code, 500)
    message = line.split(": ", 1)[1] if line.startswith(("error: ", "internal error: ")) else line
    return error_json(status, message, code)


async def body(request: Request) -> dict:
    """The request's JSON object (the size is capped in front: kb.cli.serve.guard)."""
    try:
        data = json.loads(await request.body() or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise UsageError("the body is not JSON") from None
    if not isinstance(data, dict):
        raise UsageError("the body must be a JSON object")
    return data


def route(fn):
    """An endpoint whose errors become JSON error responses."""
    async def endpoint(request: Request):
        try:
            return await fn(request)
        except Exception as e:  # every failure is a JSON error, never a traceback
            return error_response(e)
    return endpoint


class Api:
    """The routes' handlers over one Service."""

    def __init__(self, service: Service):
        self.service = service

    async def status(self, request):
        return JSONResponse(await _done(self.service.status()))

    async def query(self, request):
        b = await body(request)
        return JSONResponse(await _done(self.service.query(b.get("query"), b.get("k", 10), b.get("mode", "hybrid"),
                                                           b.get("path"))))

    async def get(self, request):
        b = await body(request) if request.method == "POST" else dict(request.query_params)
        return JSONResponse(await _done(self.service.get(b.get("path"))))

    async def ask(self, request):
        b = await body(request)
        args = (b.get("question"), b.get("k", 6), b.get("max_tokens", 256), b.get("temperature", 0.0))
        if not b.get("stream"):
            return JSONResponse(await _done(self.service.ask(*args)))
        return events(lambda on_text: self.service.ask(*args, on_text=on_text), _ask_events)

    async def embeddings(self, request):
        b = await body(request)
        vectors, used = await _done(self.service.embed(b.get("input")))
        return JSONResponse({"object": "list", "model": b.get("model") or "kb",
                             "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                             "usage": {"prompt_tokens": used, "total_tokens": used}})

    async def chat(self, request):
        from kb.cli.serve import openai

        b = await body(request)
        messages, max_tokens, temperature = openai.chat_args(b, self.service.limits)
        name = b.get("model") or "kb"
        if not b.get("stream"):
            text, prompt, new, finish = await _done(self.service.chat(messages, max_tokens, temperature))
            return JSONResponse(openai.completion(name, text, prompt, new, finish))
        return events(lambda on_text: self.service.chat(messages, max_tokens, temperature, on_text=on_text),
                      openai.chunk_events(name), data_only=True)

    async def models(self, request):
        return JSONResponse({"object": "list", "data": [{"id": "kb", "object": "model", "owned_by": "kb",
                                                         "created": int(time.time())}]})


def _done(future):
    return asyncio.wrap_future(future)


def make_app(service: Service, guard, mcp=None) -> Starlette:
    """The API's app; `mcp`: (MCP server, its streamable HTTP app) to mount at /mcp, or None."""
    api, post = Api(service), ["POST"]
    routes = [Route("/status", route(api.status)), Route("/query", route(api.query), methods=post),
              Route("/get", route(api.get), methods=["GET", "POST"]), Route("/ask", route(api.ask), methods=post),
              Route("/v1/embeddings", route(api.embeddings), methods=post),
              Route("/v1/chat/completions", route(api.chat), methods=post), Route("/v1/models", route(api.models))]
    lifespan = None
    if mcp is not None:
        server, mcp_app = mcp
        routes.append(Mount("/", app=mcp_app))  # MCP's streamable HTTP, at /mcp

        @contextlib.asynccontextmanager
        async def lifespan(app):  # a mounted app's own lifespan does not run: its sessions start here
            async with server.session_manager.run():
                yield
    return Starlette(routes=routes, middleware=[guard], lifespan=lifespan)


def events(start, shape, data_only: bool = False) -> StreamingResponse:
    """Server-sent events of a job that reports text as it grows: `start(on_text)` submits it (the
    engine never waits for the client: pieces queue here); `shape` turns ("text", piece),
    ("done", result) and ("error", response) into (event name, JSON) pairs."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    future = start(lambda piece: loop.call_soon_threadsafe(queue.put_nowait, ("text", piece)))
    future.add_done_callback(lambda f: loop.call_soon_threadsafe(queue.put_nowait, ("end", None)))

    async def stream():
        while True:
            kind, value = await queue.get()
            if kind == "end":
                try:
                    kind, value = "done", future.result()
                except Exception as e:
                    kind, value = "error", json.loads(error_response(e).body)
            for name, data in shape(kind, value):
                text = json.dumps(data, ensure_ascii=False) if not isinstance(data, str) else data
                yield (f"data: {text}\n\n" if data_only else f"event: {name}\ndata: {text}\n\n").encode()
            if kind != "text":
                return
    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _ask_events(kind: str, value):
    if kind == "text":
        return [("text", {"text": value})]
    return [("answer" if kind == "done" else "error", value)]


def request_id() -> str:
    return uuid.uuid4().hex
