"""`kb serve`'s figures for bench/latency.py: warm queries over HTTP (one client, keep-alive, then 20
clients at once), and time to first token of an answer served against the CLI's for the same
question (the CLI pays for starting a process and loading the model each time)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

KB = [sys.executable, "-m", "kb.cli"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(store: Path, *args: str) -> tuple[subprocess.Popen, int]:
    port = _port()
    proc = subprocess.Popen([*KB, "serve", "--db", str(store), "--port", str(port), *args],
                            stderr=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": "1"})
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("kb serve did not start")


def _post(conn: http.client.HTTPConnection, path: str, body: dict) -> dict:
    data = json.dumps(body).encode()
    conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    out = json.loads(r.read())
    if r.status != 200:
        raise RuntimeError(f"{r.status}: {out}")
    return out


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def warm_queries(port: int, queries: list[str], mode: str) -> dict:
    """Milliseconds per query, one client on one keep-alive connection (the first 20 untimed)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for q in queries[:20]:
        _post(conn, "/query", {"query": q, "mode": mode})
    ms = []
    for q in queries:
        t0 = time.perf_counter()
        _post(conn, "/query", {"query": q, "mode": mode})
        ms.append((time.perf_counter() - t0) * 1000)
    return {"queries": len(ms), "p50_ms": round(statistics.median(ms), 2), "p99_ms": round(_pct(ms, 0.99), 2)}


def concurrent(port: int, queries: list[str], clients: int = 20, each: int = 50) -> dict:
    """`clients` threads with a connection each, `each` hybrid queries apiece: errors and latency."""
    ms, errors = [], []

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for j in range(each):
            t0 = time.perf_counter()
            try:
                _post(conn, "/query", {"query": queries[(i * each + j) % len(queries)]})
                ms.append((time.perf_counter() - t0) * 1000)
            except Exception as e:  # counted, not raised: the figure is how many fail
                errors.append(repr(e))
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"clients": clients, "requests": clients * each, "errors": len(errors), "first_error": errors[:1],
            "p50_ms": round(statistics.median(ms), 2) if ms else None, "p99_ms": round(_pct(ms, 0.99), 2) if ms else None,
            "queries_per_s": round(len(ms) / wall, 1)}


def first_token_served(port: int, question: str) -> float:
    """Seconds from sending /ask (streamed) to its first text event."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", "/ask", body=json.dumps({"question": question, "stream": True, "max_tokens": 32}),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    first = None
    for line in r:
        if first is None and line.startswith(b"event: text"):
            first = time.perf_counter() - t0
    return first if first is not None else float("nan")


def first_token_cli(store: Path, question: str) -> float:
    """Seconds from starting `kb ask` to the first byte of its streamed answer on stdout."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([*KB, "ask", question, "--db", str(store), "--max-tokens", "32"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": "1"})
    proc.stdout.read(1)
    first = time.perf_counter() - t0
    proc.communicate()
    return first
