"""`kb serve`: one warm process for editors, agents and scripts (kb.cli.serve)."""

from __future__ import annotations

import sys
import threading
from typing import Annotated, Optional

import typer

from kb.cli import options, render
from kb.errors import UsageError

Mcp = Annotated[Optional[str], typer.Option(
    "--mcp", help="stdio: speak MCP on stdin/stdout (no HTTP); http: MCP at /mcp beside the HTTP API.",
    show_default=False)]
Host = Annotated[str, typer.Option(help="Address to listen on; any other than loopback needs --token.")]
Port = Annotated[int, typer.Option(help="Port to listen on.")]
Token = Annotated[Optional[str], typer.Option(
    envvar="KB_SERVE_TOKEN", show_default=False,
    help="Bearer token every request must carry (Authorization: Bearer TOKEN); required off loopback.")]
AllowHost = Annotated[Optional[list[str]], typer.Option(
    "--allow-host", show_default=False, help="Another Host name clients reach the server by (repeatable).")]
Watch = Annotated[bool, typer.Option("--watch", help="Keep the store's collections indexed as their files change.")]


def serve(db: options.Db = None, mcp: Mcp = None, host: Host = "127.0.0.1", port: Port = 8765,
          token: Token = None, allow_host: AllowHost = None, model: options.Generator = None,
          draft: options.Draft = None, watch: Watch = False, query_encoder: options.QueryEncoder = "auto") -> None:
    """Serve the store over HTTP (kb's JSON API, OpenAI-compatible endpoints) or MCP, warm between requests."""
    from kb.cli.serve.guard import LOOPBACK
    from kb.cli.serve.service import Service

    if mcp not in (None, "stdio", "http"):
        raise UsageError("--mcp must be stdio or http")
    if host not in LOOPBACK and not token:
        raise UsageError(f"--host {host} is reachable from other machines: set a token (--token or KB_SERVE_TOKEN)")
    service = Service(db, model, query_encoder, draft=draft)
    stop = threading.Event()
    if watch:
        _watch(service.store_dir, stop)
    try:
        if mcp == "stdio":
            from kb.cli.serve.tools import make_server

            make_server(service).run("stdio")
        else:
            _http(service, mcp == "http", host, port, token, tuple(allow_host or ()))
    finally:
        stop.set()
        service.close()


def _http(service, with_mcp: bool, host: str, port: int, token: str | None, extra: tuple[str, ...]) -> None:
    import uvicorn
    from starlette.middleware import Middleware

    from kb.cli.serve.guard import LOOPBACK, Guard
    from kb.cli.serve.http import make_app

    hosts = LOOPBACK + ((host,) if host not in ("0.0.0.0", "::") else ()) + extra
    guard = Middleware(Guard, hosts=hosts, token=token, max_body=service.limits.max_body)
    app = make_app(service, guard, _mcp(service) if with_mcp else None)
    where = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    render.warn(f"serving {service.store_dir} at {where}{' (MCP at /mcp)' if with_mcp else ''}")
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", limit_concurrency=64,
                            timeout_keep_alive=5, lifespan="on")
    uvicorn.Server(config).run(sockets=[_listen(host, port)])


def _listen(host: str, port: int):
    """The listening socket, or a one-line error (a port in use, an address not this machine's)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto TCP, not 0: asyncio turns Nagle's algorithm off only on sockets that say they are TCP,
    # and with it on a keep-alive client waited 40 ms (delayed ACK) for each response's body
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


def _mcp(service):
    """MCP's streamable HTTP app (kb.cli.serve.guard checks Host, Origin and the token in front of it)."""
    from mcp.server.transport_security import TransportSecuritySettings

    from kb.cli.serve.tools import make_server

    server = make_server(service)
    return server, server.streamable_http_app(
        streamable_http_path="/mcp", transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))


def _watch(store_dir, stop: threading.Event) -> None:
    """Index the store's collections as their files change, on a thread of its own."""
    from kb.embed.encoder import EmbedConfig
    from kb.index.collections import Settings
    from kb.index.indexer import IndexConfig
    from kb.index.store import Store
    from kb.index.watch import watch

    store = Store.open(store_dir)
    meta = store.meta_json("embedding")
    store.close()
    cfg = IndexConfig(embed=EmbedConfig(**meta["config"]) if meta else EmbedConfig(),
                      vector_index=None if meta else "none")

    def run():
        try:
            watch([], store_dir, cfg, Settings(), lambda r: [render.warn(e) for e in r.errors], stop=stop)
        except Exception as e:  # the server keeps answering from what is indexed
            from kb.cli.app import explain

            render.warn(f"kb serve --watch stopped: {explain(e)[0]}")
    threading.Thread(target=run, name="kb-watch", daemon=True).start()
    sys.stderr.flush()
