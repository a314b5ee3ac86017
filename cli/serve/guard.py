"""What every request to kb serve passes before a route sees it (an ASGI middleware, so MCP's
endpoint is covered too):

- Host: one of the names the server answers to (loopback's, the bind address, --allow-host),
  so that a web page cannot reach it through DNS rebinding;
- Origin, when a browser sends one: the same names, so that no other site's page can call it;
- a bearer token (Authorization: Bearer T), when one is set: required off loopback;
- the body's size: over `max_body` bytes is refused before it is read (413); a chunked body without
  a length is refused too (411).

A refusal is one JSON error (`error_json`, the shape of every error kb serve gives); nothing else runs.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from starlette.responses import JSONResponse

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def host_name(value: str) -> str:
    """The name part of a Host header or a URL's netloc, lower-cased: '[::1]:8000' -> '::1'."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Guard:
    def __init__(self, app, hosts: tuple[str, ...], token: str | None, max_body: int):
        self.app, self.hosts, self.token, self.max_body = app, {h.lower() for h in hosts}, token, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self.refusal(headers)
        if refusal is not None:
            return await error_json(*refusal, 2)(scope, receive, send)
        size = headers.get("content-length")
        if size is None and "chunked" in headers.get("transfer-encoding", ""):
            return await error_json(411, "a body needs a Content-Length", 2)(scope, receive, send)
        if size is not None and (not size.isdigit() or int(size) > self.max_body):
            return await error_json(413, f"the body is over {self.max_body} bytes", 2)(scope, receive, send)
        return await self.app(scope, receive, send)

    def refusal(self, headers: dict) -> tuple[int, str] | None:
        if host_name(headers.get("host", "")) not in self.hosts:
            return 403, "this Host is not one the server answers to"
        origin = headers.get("origin")
        if origin is not None and (origin == "null" or host_name(urlsplit(origin).netloc) not in self.hosts):
            return 403, "requests from this Origin are not allowed"
        if self.token is not None:
            given = headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                return 401, "a valid bearer token is required (Authorization: Bearer TOKEN)"
        return None


TYPES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "store_incompatible",
         411: "length_required", 413: "too_large", 503: "busy", 500: "internal"}


def error_json(status: int, message: str, code: int) -> JSONResponse:
    """kb serve's one shape of an error: {"error": {"message", "type", "code"}} (`code`: the CLI's
    exit code), with its status (503 says when to come back)."""
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse({"error": {"message": message, "type": TYPES.get(status, "error"), "code": code}},
                        status_code=status, headers=headers)
