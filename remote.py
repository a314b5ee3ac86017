"""A small client for OpenAI-compatible servers (vLLM, SGLang, llama.cpp, TEI, Infinity, kb serve):
JSON posts with retries, and server-sent event streams, over the standard library (no client
package to load). The API key comes from the environment and is sent, never printed: errors
name the server, the status and the server's own message, not the request's headers.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Iterator

from kb.errors import Unavailable

RETRIES = 3  # tries of a request that failed to connect or got a 429 or 5xx
KEY_VARIABLES = ("KB_BACKEND_API_KEY", "OPENAI_API_KEY")


def endpoint(base: str, path: str) -> str:
    """`base` (http://host:port, with or without /v1) joined to an API path such as /chat/completions."""
    base = base.rstrip("/")
    return (base if base.endswith("/v1") else base + "/v1") + path


def _headers() -> dict[str, str]:
    key = next((os.environ[v] for v in KEY_VARIABLES if os.environ.get(v)), None)
    return {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}


def _open(url: str, body: dict, timeout: float):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=_headers(), method="POST")
    for attempt in range(RETRIES):
        try:
            return urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as e:
            if e.code not in (429, 500, 502, 503, 504) or attempt == RETRIES - 1:
                raise Unavailable(f"{url} answered {e.code}: {_message(e)}") from None
        except (urllib.error.URLError, OSError) as e:
            if attempt == RETRIES - 1:
                reason = getattr(e, "reason", e)
                raise Unavailable(f"cannot reach {url}: {reason}") from None
        time.sleep(0.5 * 2 ** attempt)
    raise AssertionError("unreachable")


def _message(e: urllib.error.HTTPError) -> str:
    try:
        data = json.loads(e.read() or b"{}")
        error = data.get("error", data)
        return " ".join(str(error.get("message", error) if isinstance(error, dict) else error).split())[:200]
    except (ValueError, OSError):
        return e.reason or "no message"


def post(base: str, path: str, body: dict, timeout: float = 600) -> dict:
    with _open(endpoint(base, path), body, timeout) as r:
        try:
            return json.loads(r.read())
        except ValueError:
            raise Unavailable(f"{endpoint(base, path)} answered something that is not JSON") from None


def stream(base: str, path: str, body: dict, timeout: float = 600) -> Iterator[dict]:
    """The JSON objects of a server-sent event stream's `data:` lines, up to `[DONE]`."""
    with _open(endpoint(base, path), {**body, "stream": True}, timeout) as r:
        for line in r:
            line = line.decode("utf-8", "replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                yield json.loads(data)
            except ValueError:
                raise Unavailable(f"{endpoint(base, path)} streamed a line that is not JSON") from None
